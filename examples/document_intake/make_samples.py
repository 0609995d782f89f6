"""Write the sample PDFs of the document-intake example (they are committed too).

Run from anywhere: ``python examples/document_intake/make_samples.py``. Needs
``fpdf2``. The output is deterministic (fixed creation date), so re-running it
leaves the committed files unchanged.

Also writes ``broken-scan.pdf``: a PDF whose body was cut off in transfer, so
the pipeline has a deliberately unreadable file to dead-letter.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from fpdf import FPDF

DOCS = Path(__file__).resolve().parent / "data" / "docs"

# Each document: title, then sections of (heading or None, paragraphs).
Section = tuple[str | None, list[str]]

SAMPLES: dict[str, tuple[str, list[Section]]] = {
    "invoice-harbor-freight.pdf": (
        "Invoice HF-10233",
        [
            (
                None,
                [
                    "Harbor Freight Forwarding Ltd, Unit 4 Dock Road, Southampton.",
                    "Invoice number: HF-10233. Invoice date: 12 March 2024. "
                    "Due date: 11 April 2024. Purchase order: PO-7781.",
                    "Bill to: Alder Furniture Co, 77 Mill Lane, Leeds.",
                ],
            ),
            (
                "Charges",
                [
                    "Sea freight, 2 containers of 40 ft, Rotterdam to Southampton: 3,400.00.",
                    "Customs clearance and documentation: 180.00.",
                    "Inland haulage to Leeds: 520.00. Storage, 3 days: 90.00.",
                ],
            ),
            (
                "Amount due",
                [
                    "Subtotal 4,190.00. VAT 20% 838.00. Total amount due 5,028.00.",
                    "Payment terms: net 30 days. Please pay by bank transfer and quote the "
                    "invoice number. A late payment fee of 2% a month applies after the due date.",
                ],
            ),
        ],
    ),
    "contract-services-agreement.pdf": (
        "Master Services Agreement",
        [
            (
                None,
                [
                    "This Master Services Agreement is entered into on 5 January 2024 between "
                    "Copperline Software Inc (the Supplier) and Meadowbrook Insurance (the "
                    "Customer).",
                ],
            ),
            (
                "1. Services",
                [
                    "The Supplier shall provide the software maintenance and support services "
                    "described in Schedule A, in accordance with the service levels in Schedule B.",
                ],
            ),
            (
                "2. Fees and payment",
                [
                    "The Customer shall pay the fees set out in Schedule C within thirty days of "
                    "each invoice. Fees are exclusive of taxes.",
                ],
            ),
            (
                "3. Term and termination",
                [
                    "This Agreement commences on the Effective Date and continues for thirty-six "
                    "months. Either party may terminate this Agreement for material breach that "
                    "is not remedied within thirty days of written notice.",
                ],
            ),
            (
                "4. Limitation of liability",
                [
                    "Neither party shall be liable for indirect or consequential loss. Each "
                    "party's total liability under this Agreement is limited to the fees paid in "
                    "the twelve months before the claim.",
                ],
            ),
            (
                "5. Governing law",
                [
                    "This Agreement is governed by the laws of the State of Delaware. In witness "
                    "whereof, the parties have signed this Agreement by their authorised "
                    "representatives.",
                ],
            ),
        ],
    ),
    "resume-carlos-mendes.pdf": (
        "Carlos Mendes - Curriculum Vitae",
        [
            (
                None,
                [
                    "UX researcher and product designer. carlos.mendes@example.net, "
                    "+351 912 345 678, Lisbon.",
                ],
            ),
            (
                "Professional experience",
                [
                    "Lead UX Researcher, Tilde Mobility, 2021 to present. Ran 140 user interviews "
                    "and usability tests; redesigned the booking flow, raising conversion by 18%.",
                    "Product Designer, Casa Digital, 2017 to 2021. Designed the design system "
                    "and mentored three junior designers.",
                ],
            ),
            (
                "Education",
                ["MSc Human-Computer Interaction, University of Lisbon, 2017."],
            ),
            (
                "Skills",
                [
                    "User research, usability testing, Figma, prototyping, survey design, "
                    "Portuguese, English, Spanish. References available on request.",
                ],
            ),
        ],
    ),
    "report-q3-sales.pdf": (
        "Quarterly Sales Report - Q3 2024",
        [
            (
                "Executive summary",
                [
                    "Revenue in the third quarter reached 4.2 million, up 9% on the second quarter "
                    "and 14% year over year. Growth came mainly from the enterprise segment.",
                ],
            ),
            (
                "Results by region",
                [
                    "North America grew 11% and remains the largest region. Europe grew 7% after "
                    "two flat quarters. Asia-Pacific declined 3% because two large renewals moved "
                    "into the fourth quarter.",
                ],
            ),
            (
                "Pipeline and forecast",
                [
                    "The qualified pipeline for Q4 stands at 6.8 million. We forecast Q4 revenue "
                    "between 4.5 and 4.7 million.",
                ],
            ),
            (
                "Recommendations",
                [
                    "Hire two account executives for Europe, launch the partner programme in "
                    "Asia-Pacific, and review discounting on mid-market deals, where average "
                    "discounts rose to 22%.",
                ],
            ),
        ],
    ),
}


def render(title: str, sections: list[Section]) -> bytes:
    """Lay out one sample document as PDF bytes.

    Args:
        title: the document title (also set as the PDF metadata title).
        sections: (heading or None, paragraphs) in order.

    Returns:
        The PDF file's bytes.
    """
    pdf = FPDF(format="A4")
    pdf.set_creation_date(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    pdf.set_title(title)
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.multi_cell(0, 9, title, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    for heading, paragraphs in sections:
        if heading:
            pdf.set_font("Helvetica", "B", 12)
            pdf.multi_cell(0, 7, heading, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        pdf.set_font("Helvetica", "", 11)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
    return bytes(pdf.output())


def broken(valid: bytes) -> bytes:
    """Return a PDF cut off part-way, as a failed upload or transfer leaves one."""
    # The header survives, so the file looks like a PDF, but the objects,
    # the cross-reference table and the trailer are gone.
    return valid[:400]


def main() -> None:
    """Write every sample PDF (and the broken one) into the data folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS, help="folder to write into")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    first = b""
    for name, (title, sections) in SAMPLES.items():
        data = render(title, sections)
        first = first or data
        (args.out / name).write_bytes(data)
        print(f"wrote {args.out / name} ({len(data)} bytes)")
    (args.out / "broken-scan.pdf").write_bytes(broken(first))
    print(f"wrote {args.out / 'broken-scan.pdf'} (truncated on purpose)")


if __name__ == "__main__":
    main()
