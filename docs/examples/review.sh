# run the pipeline: T2 and T3 are parked for review
streamflow run docs/examples/review_pipeline.py -i docs/examples/review_tickets.jsonl -o out/review.jsonl --overwrite --no-progress
streamflow review list docs/examples/review_pipeline.py -o out/review.jsonl
# T2 goes on as drafted: to sign, then to the output
streamflow review approve T2 docs/examples/review_pipeline.py -o out/review.jsonl
# T3 goes back to draft with the note, then to sign and the output
streamflow review reject T3 docs/examples/review_pipeline.py -o out/review.jsonl --note "we will call you about the double charge"
streamflow trace T3 --input out/review.jsonl
