"""Write a file of realistic, varied support tickets for the support-ticket pipeline.

    python examples/support_tickets/generate_tickets.py --count 2500 --seed 7 \\
        --out examples/support_tickets/data/tickets.jsonl

Tickets are drawn from per-category templates and fillers, with typos, some
personal data in the body (e-mail addresses, phone numbers, card numbers) so
redaction shows, some 16-digit reference numbers that are not card numbers,
and about 0.5% malformed lines (invalid JSON, or a ticket missing a required
field) so dead-lettering shows. The same seed always gives the same file.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GeneratedLine", "generate_tickets", "main"]

CATEGORY_WEIGHTS = {
    "billing": 18,
    "account_access": 16,
    "bug_report": 16,
    "technical_setup": 14,
    "shipping": 10,
    "cancellation": 9,
    "feature_request": 9,
    "privacy": 8,
}

SUBJECTS: dict[str, list[str]] = {
    "billing": [
        "Charged twice for {month}",
        "Question about invoice {invoice}",
        "Refund request",
        "Wrong amount on my bill",
        "Payment failed",
        "Unexpected charge of {amount}",
        "Billing issue",
        "Need a copy of my invoice",
    ],
    "account_access": [
        "Cannot log in",
        "Password reset not working",
        "Locked out of my account",
        "Two-factor code rejected",
        "Login problem on {device}",
        "Help, can't sign in",
        "SSO sign-in error",
        "Lost access to my account",
    ],
    "bug_report": [
        "App keeps crashing",
        "Sales not syncing",
        "Bug in {screen}",
        "Report totals are wrong",
        "Receipts print strange characters",
        "App freezes on {device}",
        "Error after updating to {version}",
        "Something is broken",
    ],
    "technical_setup": [
        "How to pair the card reader",
        "Printer setup help",
        "Connecting {integration}",
        "API key and webhooks",
        "Importing our products",
        "Setting up a new {device}",
        "Help with setup",
        "Network printer not found",
    ],
    "shipping": [
        "Where is my order {order}?",
        "Hardware order not delivered",
        "Damaged {hardware} on arrival",
        "Tracking number for {order}",
        "Return the {hardware}",
        "Change delivery address",
        "Delivery to {country}",
        "Order still processing",
    ],
    "cancellation": [
        "Cancel my subscription",
        "Closing our account",
        "Please stop the renewal",
        "Pause account for the season",
        "Downgrade or cancel?",
        "We're leaving",
        "Cancellation request",
        "End of contract",
    ],
    "feature_request": [
        "Feature request: {feature}",
        "Suggestion for the app",
        "Would love {feature}",
        "Idea: {feature}",
        "Is {feature} on the roadmap?",
        "Product feedback",
        "Missing feature",
        "Request for {integration} integration",
    ],
    "privacy": [
        "GDPR data request",
        "Delete my personal data",
        "Data processing agreement",
        "Where is our data stored?",
        "Unsubscribe me",
        "Privacy question",
        "Request for a copy of my data",
        "Card data and PCI",
    ],
}

BODIES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for {month}, both payments of {amount} show on my card statement.",
        "My invoice {invoice} shows {amount} but we are on the {plan} plan, which should be less.",
        "We removed {seats} seats last week and still got billed for them. Can I get a refund?",
        "The payment for invoice {invoice} failed and now the dashboard says the account will "
        "be paused. I updated the card, can you retry?",
        "There is a prorated charge of {amount} on my invoice that I don't understand.",
        "Can you refund the duplicate charge? Our finance system paid invoice {invoice} twice.",
        "Where can I download the PDF invoices for last year? Our accountant needs them.",
        "We were billed {amount} after the trial ended although I never picked a plan.",
        "Please update the billing address on our invoices, the tax is calculated wrong.",
        "My bank shows a charge of {amount} from you on {date} that I do not recognise.",
    ],
    "account_access": [
        "I reset my password twice but the sign in page still says the password is wrong.",
        "After too many attempts my account got locked and I need to open the shop in "
        "{minutes} minutes.",
        "The two-factor code from my authenticator app is rejected every time on my {device}.",
        "I lost my phone with the authenticator on it and can't get past the verification "
        "code step.",
        "The password reset email never arrives, I tried three times and checked spam.",
        "One of my staff can't sign in on the {device} since this morning, it just says "
        "invalid credentials.",
        "Our single sign-on login shows an error that the user is not assigned to the app.",
        "I changed jobs and want to sign in with my new email address but I can't access the "
        "old mailbox.",
        "The reset link says it has expired as soon as I click it.",
        "I keep getting logged out and now it won't let me log in at all.",
    ],
    "bug_report": [
        "The app crashes every time I open the sales history on my {device}. We're on version "
        "{version}.",
        "Sales from our second {device} are not syncing to the dashboard since {date}.",
        "The daily report totals don't match the till, a few sales are missing or counted on "
        "the next day.",
        "Receipts print garbled characters instead of accented letters since the last update.",
        "The checkout screen freezes when I apply a discount, I have to restart the app.",
        "After updating to {version}, {screen} shows a blank white screen.",
        "Stock levels go negative in {screen} even though we have items on the shelf.",
        "Refunds made today don't show up in the report and the totals look wrong.",
        "The app became really slow and sometimes freezes for a minute on {device}.",
        "Some sales are shown twice in the sales list and the report.",
    ],
    "technical_setup": [
        "How do I pair the card reader with my {device}? Bluetooth finds nothing.",
        "We bought a network receipt printer but the app doesn't find it on the wifi.",
        "How do we connect {integration} so our sales are sent to our accounting?",
        "Our developer needs an API key and wants to know how webhooks are signed.",
        "Can I import our {count} products from a spreadsheet instead of typing them in?",
        "We got a new {device}, how do I set it up with the reader and printer?",
        "The reader disconnects during pairing, what am I doing wrong?",
        "How do I add the network printer by its IP address?",
        "Which settings do I need so {integration} receives daily sales summaries?",
        "Where is the CSV template for importing products and prices?",
    ],
    "shipping": [
        "I ordered {qty} card readers (order {order}) on {date} and nothing has arrived yet.",
        "The tracking for order {order} hasn't moved in a week, is the parcel lost?",
        "The {hardware} arrived with a cracked case and doesn't power on.",
        "Can you send me the tracking number for order {order}?",
        "We don't need the {hardware} anymore, how do I return it and get a refund?",
        "We moved to a new shop, can you change the delivery address of order {order}?",
        "How long does delivery to {country} take for a card reader?",
        "The carrier says the parcel was delivered but we never got it.",
        "My hardware order {order} is still processing after {days} days.",
        "The box was missing the charging cable for the {hardware}.",
    ],
    "cancellation": [
        "Please cancel our subscription, we are closing the store at the end of {month}.",
        "We sold the business and need to cancel and close the account.",
        "Please don't renew our annual plan, we're switching provider.",
        "Our cafe closes for the winter, can we pause the account instead of cancelling?",
        "I want to cancel, what happens to our sales data and the rented readers?",
        "Is there a fee if we cancel the annual contract early?",
        "I can't find where to cancel the plan in settings.",
        "We don't use the product anymore, please cancel and stop charging us.",
        "I cancelled last month but I want to reactivate the account now.",
        "Please cancel the subscription for our {store} location only.",
    ],
    "feature_request": [
        "It would be great to have {feature}, we would use it every day.",
        "Any plans for {feature}? Our customers keep asking for it.",
        "Please add {feature} to the app, it would save us hours each week.",
        "We'd love an integration with {integration}. Where can we vote for it?",
        "Suggestion: let us have {feature}. Is there a roadmap?",
        "Can we join the beta programme to try {feature} early?",
        "We need more than three variant options for our products.",
        "Would you consider {feature}? It's the one thing we miss.",
        "Feedback from our staff: {feature} would make checkout faster.",
        "Is there a public roadmap where I can see if {feature} is planned?",
    ],
    "privacy": [
        "Under GDPR I request a copy of all personal data you hold about me.",
        "Please delete my account and all my personal data.",
        "Our compliance team needs your data processing agreement signed.",
        "Is our customer data stored in the EU or the US? We need to know for GDPR.",
        "Please stop sending me marketing emails and newsletters.",
        "Do you store our customers' card numbers anywhere?",
        "A customer asked us for the personal data we hold about them, how do we export it?",
        "Can you send the list of subprocessors you use?",
        "How long do you keep personal data after we close the account?",
        "How do I change my cookie settings on your website?",
    ],
}

OPENERS = ["Hi,", "Hello,", "Hi team,", "Hey there,", "Good morning,", "Dear support,", "", ""]
CLOSERS = [
    "Thanks!",
    "Thanks in advance.",
    "Please help asap.",
    "Kind regards, {name}",
    "Cheers, {name}",
    "{name}",
    "",
    "",
]
VAGUE = [
    "It doesn't work, please call me back.",
    "Same problem as last time, can someone look?",
    "Urgent!! Please help.",
    "Following up on my previous message.",
    "Nothing happens when I press the button.",
]
PII_LINES = [
    "You can reach me at {email}.",
    "Call me on {phone} if that's easier.",
    "My email is {email} and my phone is {phone}.",
    "The card ending in the number {card} is the one that was charged.",
    "I paid with card {card}, please check.",
    "Reply to {email} please, I don't check the other inbox.",
]
REFERENCE_LINES = [
    "Our internal reference is {reference}.",
    "Reference number {reference} from our bank.",
]
FILLERS: dict[str, list[str]] = {
    "month": ["January", "February", "March", "April", "May", "June", "July", "August"],
    "plan": ["Starter", "Plus", "Pro"],
    "device": ["iPad", "iPad Air", "Galaxy Tab", "Android tablet", "iPhone", "Surface tablet"],
    "screen": ["the sales history", "the products page", "inventory", "the reports tab"],
    "version": ["5.12.0", "5.12.3", "5.13.1", "6.0.0"],
    "integration": ["QuickBooks", "Xero", "Shopify", "WooCommerce", "Sage", "Mailchimp"],
    "hardware": ["card reader", "receipt printer", "cash drawer", "barcode scanner"],
    "country": ["Canada", "Ireland", "Germany", "the UK", "Australia", "Spain"],
    "feature": [
        "staff scheduling",
        "a loyalty program",
        "gift cards",
        "dark mode",
        "online booking",
        "split payments",
        "low stock alerts",
        "a kitchen display",
        "custom report columns",
    ],
    "store": ["Main Street", "Harbour", "Downtown", "Airport", "Market Hall"],
    "name": ["Anna", "Luis", "Priya", "Tom", "Mei", "Jonas", "Fatima", "Oscar", "Chloe", "Sam"],
}
CHANNELS = ["email"] * 5 + ["web_form"] * 3 + ["chat"] * 2 + ["phone"]
DOMAINS = ["example.com", "mail.example.org", "shop.example.net"]


@dataclass(frozen=True)
class GeneratedLine:
    """One line of the output file and the category its ticket was written for.

    Attributes:
        line: the JSON line (or a deliberately malformed one).
        category: the category of the template behind it.
        malformed: True for a line that should be dead-lettered.
    """

    line: str
    category: str
    malformed: bool = False


def generate_tickets(count: int, seed: int) -> Iterator[GeneratedLine]:
    """Yield ``count`` ticket lines, the same ones for the same seed.

    Args:
        count: how many lines.
        seed: the random seed.

    Returns:
        An iterator of GeneratedLine.
    """
    rng = random.Random(seed)
    categories = list(CATEGORY_WEIGHTS)
    weights = list(CATEGORY_WEIGHTS.values())
    customers = max(50, count // 4)
    for number in range(1, count + 1):
        category = rng.choices(categories, weights)[0]
        ticket = {
            "id": f"T{number:06d}",
            "customer_id": f"cust-{rng.randrange(customers):05d}",
            "subject": _fill(rng.choice(SUBJECTS[category]), rng),
            "body": _body(category, rng),
            "channel": rng.choice(CHANNELS),
        }
        if rng.random() < 0.25:
            ticket["subject"] = _typos(ticket["subject"], rng)
            ticket["body"] = _typos(ticket["body"], rng)
        roll = rng.random()
        if roll < 0.003:
            text = json.dumps(ticket)
            yield GeneratedLine(text[: rng.randrange(10, len(text) - 5)], category, True)
        elif roll < 0.006:
            del ticket[rng.choice(["body", "customer_id", "subject"])]
            yield GeneratedLine(json.dumps(ticket), category, True)
        else:
            yield GeneratedLine(json.dumps(ticket), category)


def _body(category: str, rng: random.Random) -> str:
    if rng.random() < 0.03:
        # Vague tickets say too little to classify: they should end up with a person.
        return " ".join(p for p in (rng.choice(OPENERS), rng.choice(VAGUE)) if p)
    parts = [rng.choice(OPENERS), _fill(rng.choice(BODIES[category]), rng)]
    roll = rng.random()
    if roll < 0.08:
        # Real tickets wander: a second topic in passing.
        other = rng.choice([c for c in BODIES if c != category])
        parts.append(_fill(rng.choice(BODIES[other]), rng))
    elif roll < 0.4:
        parts.append(_fill(rng.choice(BODIES[category]), rng))
    roll = rng.random()
    if roll < 0.15:
        parts.append(_fill(rng.choice(PII_LINES), rng))
    elif roll < 0.18:
        parts.append(_fill(rng.choice(REFERENCE_LINES), rng))
    parts.append(_fill(rng.choice(CLOSERS), rng))
    return " ".join(p for p in parts if p)


def _fill(template: str, rng: random.Random) -> str:
    values = {key: rng.choice(options) for key, options in FILLERS.items()}
    name = values["name"]
    values.update(
        amount=f"${rng.choice([29, 49, 79, 99, 149, 240]) + rng.choice([0, 0.5, 0.99]):.2f}",
        invoice=f"INV-{rng.randrange(2023, 2026)}-{rng.randrange(10000, 99999)}",
        order=f"HW-{rng.randrange(100000, 999999)}",
        seats=str(rng.randrange(2, 9)),
        qty=str(rng.randrange(2, 5)),
        days=str(rng.randrange(4, 12)),
        minutes=str(rng.choice([10, 20, 30, 45])),
        count=str(rng.choice([150, 400, 1200, 3000])),
        date=f"{rng.randrange(1, 29)} {values['month']}",
        email=f"{name.lower()}.{rng.randrange(10, 99)}@{rng.choice(DOMAINS)}",
        phone=_phone(rng),
        card=_card(rng, valid=True),
        reference=_card(rng, valid=False),
    )
    return template.format(**values)


def _phone(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"+1 ({rng.randrange(200, 999)}) 555-{rng.randrange(1000, 9999)}"
    if style == 1:
        return f"+44 20 7946 {rng.randrange(1000, 9999)}"
    return f"0{rng.randrange(6000, 7999)} {rng.randrange(100000, 999999)}"


def _card(rng: random.Random, *, valid: bool) -> str:
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = digit * 2 if position % 2 == 0 else digit
        total += value - 9 if value > 9 else value
    check = (10 - total % 10) % 10
    if not valid:
        check = (check + rng.randrange(1, 10)) % 10
    number = "".join(map(str, [*digits, check]))
    return " ".join(number[i : i + 4] for i in range(0, 16, 4))


def _typos(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) > 4 and word.isalpha() and rng.random() < 0.08:
            j = rng.randrange(1, len(word) - 1)
            kind = rng.randrange(3)
            if kind == 0:
                word = word[: j - 1] + word[j] + word[j - 1] + word[j + 1 :]
            elif kind == 1:
                word = word[:j] + word[j + 1 :]
            else:
                word = word[:j] + word[j] + word[j:]
            words[i] = word
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    """Write the tickets file; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data/tickets.jsonl")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bad = 0
    with args.out.open("w", encoding="utf-8") as out:
        for generated in generate_tickets(args.count, args.seed):
            out.write(generated.line + "\n")
            bad += generated.malformed
    print(f"wrote {args.count} tickets ({bad} malformed) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
