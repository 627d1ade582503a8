"""Run as a script by test_tickets: submit one request, print its ticket, then wait to be killed.

Usage: _submitter.py BASE_URL API_KEY NAME TO_CUE
"""

from __future__ import annotations

import sys
import time

from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox


def main() -> None:
    base_url, api_key, name, to_cue = sys.argv[1:]
    client = CueClient(api_key, base_url)
    mailbox = Mailbox.open(client, name, poll_wait=0.3)
    ticket = mailbox.submit(to_cue, {"q": "survive me"}, timeout=60)
    print(ticket, flush=True)
    time.sleep(120)  # SIGKILLed by the test long before this ends


if __name__ == "__main__":
    main()
