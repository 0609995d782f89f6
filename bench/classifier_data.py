"""A hard, noisy set of labelled support tickets for the classifier benchmark.

The example's ticket generator writes tickets from a few templates per
category: any classifier labels those almost perfectly, which would make a
benchmark meaningless. Here a ticket is assembled from phrases, most of them
shared between categories ("refund" is billing, shipping and cancellation;
"account" is everywhere), with a varying share of phrases of a second,
confusable category, generic chatter, typos, short and vague tickets, and a
few percent of labels that a person got wrong. A good linear classifier
reaches roughly 80-90% on it, as on real helpdesk data.

    python -m bench.classifier_data --count 40000 --out /tmp/tickets.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

__all__ = ["CONFUSABLE", "PHRASES", "noisy_tickets"]

# Per category: phrases that lean towards it. Many words recur across categories
# on purpose (account, card, order, refund, data, sync, app, invoice ...).
PHRASES: dict[str, list[str]] = {
    "billing": [
        "charged twice",
        "double charge on my card",
        "invoice is wrong",
        "refund the payment",
        "the amount on the invoice",
        "billed for seats we removed",
        "prorated charge",
        "payment failed",
        "card was declined",
        "update the card on the account",
        "tax on the invoice",
        "VAT number",
        "download past invoices",
        "billing address",
        "unexpected charge",
        "charged after the trial",
        "plan price went up",
        "monthly fee",
        "annual plan payment",
        "credit note",
        "statement shows a charge",
        "overcharged this month",
        "receipt for the subscription",
        "payment method",
        "the direct debit bounced",
        "discount code not applied to the bill",
    ],
    "account_access": [
        "cannot log in",
        "password reset email",
        "locked out of the account",
        "two-factor code rejected",
        "authenticator app",
        "verification code never arrives",
        "sign in page says wrong password",
        "single sign-on error",
        "user not assigned",
        "session keeps expiring",
        "reset link expired",
        "change the login email",
        "staff member cannot sign in",
        "invalid credentials",
        "account disabled",
        "forgot my username",
        "login loops back",
        "SSO with Okta",
        "access for a new manager",
        "remove an old employee's access",
        "permissions for staff accounts",
        "security question",
        "phone number for 2FA changed",
        "login on the tablet",
    ],
    "bug_report": [
        "the app crashes",
        "sales are not syncing",
        "report totals are wrong",
        "receipts print garbled characters",
        "screen freezes at checkout",
        "blank white screen after the update",
        "stock goes negative",
        "refunds missing from the report",
        "sales shown twice",
        "app is very slow",
        "error message when saving",
        "sync stopped since yesterday",
        "data in the dashboard is wrong",
        "button does nothing",
        "export file is empty",
        "numbers do not match the till",
        "discount is applied twice",
        "timezone is wrong",
        "the update broke",
        "spinning wheel forever",
        "error code 500",
        "duplicate products",
        "images do not load",
        "search returns nothing",
    ],
    "technical_setup": [
        "pair the card reader",
        "bluetooth finds nothing",
        "set up the receipt printer",
        "printer not found on the wifi",
        "connect the accounting integration",
        "API key",
        "webhooks are signed",
        "import products from a spreadsheet",
        "CSV template",
        "set up a new tablet",
        "network printer IP address",
        "configure the cash drawer",
        "barcode scanner setup",
        "install the app on a second device",
        "sync settings",
        "how do I configure",
        "connect to Xero",
        "connect to QuickBooks",
        "Shopify connection",
        "set up taxes",
        "add a second location",
        "kitchen printer routing",
        "firmware update for the reader",
        "test mode",
    ],
    "shipping": [
        "order has not arrived",
        "tracking has not moved",
        "parcel is lost",
        "arrived damaged",
        "return the card reader",
        "change the delivery address",
        "delivery time to Canada",
        "carrier says delivered",
        "order still processing",
        "missing charging cable",
        "tracking number",
        "courier",
        "hardware order",
        "replacement device",
        "wrong item in the box",
        "customs fees on delivery",
        "return label",
        "exchange the printer",
        "shipment split in two",
        "refund for the returned hardware",
        "order number",
        "delivered to the wrong store",
    ],
    "cancellation": [
        "cancel my subscription",
        "close the account",
        "do not renew",
        "switching provider",
        "pause the account for winter",
        "what happens to our data if we cancel",
        "early termination fee",
        "cannot find where to cancel",
        "stop charging us",
        "reactivate the account",
        "cancel one location",
        "downgrade the plan",
        "end of the contract",
        "sold the business",
        "closing the store",
        "refund the remaining months",
        "cancel the free trial",
        "export before leaving",
        "delete the account after cancelling",
        "notice period",
    ],
    "feature_request": [
        "it would be great to have",
        "please add",
        "any plans for",
        "on the roadmap",
        "we would love",
        "suggestion",
        "feature request",
        "beta programme",
        "dark mode",
        "staff scheduling",
        "loyalty program",
        "gift cards",
        "online booking",
        "split payments",
        "low stock alerts",
        "custom report columns",
        "more variant options",
        "integration with Mailchimp",
        "would save us hours",
        "vote for an idea",
        "better export options",
        "customisable receipts",
        "multi currency support",
    ],
    "privacy": [
        "GDPR request",
        "delete my personal data",
        "data processing agreement",
        "where is our data stored",
        "stop marketing emails",
        "unsubscribe",
        "store card numbers",
        "export customer personal data",
        "list of subprocessors",
        "how long do you keep data",
        "cookie settings",
        "data breach",
        "right to be forgotten",
        "privacy policy",
        "consent for newsletters",
        "CCPA",
        "who can see our customer data",
        "encryption of data",
        "data residency in the EU",
        "access request from a customer",
        "security audit",
        "PCI compliance",
    ],
}

# Categories people confuse: a ticket often carries phrases of one of these too.
CONFUSABLE: dict[str, list[str]] = {
    "billing": ["cancellation", "shipping", "account_access"],
    "account_access": ["bug_report", "privacy", "technical_setup"],
    "bug_report": ["technical_setup", "feature_request", "account_access"],
    "technical_setup": ["bug_report", "shipping", "feature_request"],
    "shipping": ["billing", "technical_setup", "cancellation"],
    "cancellation": ["billing", "privacy", "account_access"],
    "feature_request": ["bug_report", "technical_setup", "privacy"],
    "privacy": ["account_access", "cancellation", "billing"],
}

GENERIC = [
    "hi",
    "hello team",
    "please help",
    "thanks",
    "as soon as possible",
    "since yesterday",
    "this morning",
    "our store",
    "the app",
    "my account",
    "our customers",
    "on the iPad",
    "on Android",
    "the dashboard",
    "again",
    "urgent",
    "not sure if this is the right place",
    "following up",
    "we are a small cafe",
    "my manager asked me to write",
    "it is busy today",
    "can someone call me",
    "I tried everything",
    "see attached screenshot",
    "kind regards",
    "best",
    "we have been customers for years",
    "last week",
    "every day",
    "a few times",
    "in the settings",
    "the order",
    "the payment",
    "the card",
    "our data",
    "the report",
    "the account",
    "refund",
    "please advise",
    "what should I do",
]

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

CONNECTORS = [". ", ", ", " and ", " but ", ". Also ", " because ", " - ", "; ", " so "]


def noisy_tickets(
    count: int, seed: int = 11, *, label_noise: float = 0.04
) -> list[tuple[str, str]]:
    """Return ``count`` ``(text, label)`` pairs, the same ones for the same seed.

    Args:
        count: how many tickets.
        seed: the random seed.
        label_noise: the share of tickets whose label is a wrong (confusable) one.

    Returns:
        The labelled tickets.
    """
    rng = random.Random(seed)
    categories = list(CATEGORY_WEIGHTS)
    weights = list(CATEGORY_WEIGHTS.values())
    rows: list[tuple[str, str]] = []
    for _ in range(count):
        label = rng.choices(categories, weights)[0]
        other = rng.choice(CONFUSABLE[label])
        # How much of the ticket is about its own category: from barely to wholly.
        own_share = rng.uniform(0.5, 1.0)
        parts = [rng.choice(GENERIC)] if rng.random() < 0.6 else []
        for _ in range(rng.choice([1, 2, 2, 3, 3, 4, 4, 5, 6])):
            roll = rng.random()
            if roll < own_share:
                parts.append(rng.choice(PHRASES[label]))
            elif roll < own_share + (1 - own_share) * 0.55:
                parts.append(rng.choice(PHRASES[other]))
            elif roll < own_share + (1 - own_share) * 0.7:
                parts.append(rng.choice(PHRASES[rng.choice(categories)]))
            else:
                parts.append(rng.choice(GENERIC))
        if rng.random() < 0.5:
            parts.append(rng.choice(GENERIC))
        text = parts[0]
        for part in parts[1:]:
            text += rng.choice(CONNECTORS) + part
        text = _typos(text, rng, rate=rng.choice([0.0, 0.02, 0.05, 0.12]))
        if rng.random() < 0.3:
            text = text.capitalize()
        if rng.random() < label_noise:
            label = rng.choice(CONFUSABLE[label])
        rows.append((text, label))
    return rows


def _typos(text: str, rng: random.Random, *, rate: float) -> str:
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) > 3 and rng.random() < rate:
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
    """Write the tickets as JSONL (``text``, ``label``); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with args.out.open("w", encoding="utf-8") as out:
        for text, label in noisy_tickets(args.count, args.seed):
            out.write(json.dumps({"text": text, "label": label}) + "\n")
    print(f"wrote {args.count} labelled tickets to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
