"""An RPC service: three workers share one task; a client fires 30 requests at once.

    python examples/rpc_service.py

The three workers open the same mailbox ("pricing") under different worker
ids, so they claim from one queue: each request goes to exactly one of them.
The client's 30 requests are outstanding together and share one reply stream,
routed back by correlation id. One request asks for an unknown item: the
worker's handler raises, and the caller gets a `RemoteError`.

Uses `CUEAPI_API_KEY` / `CUEAPI_BASE_URL` when set, else an embedded server.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import msgspec

from cuemsg._exceptions import RemoteError
from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox, Message

PRICES = {"apple": 3, "pear": 4, "plum": 5}


class Quote(msgspec.Struct):
    item: str
    qty: int


class Price(msgspec.Struct):
    item: str
    total: int
    worker: str


@contextlib.contextmanager
def connect() -> Iterator[CueClient]:
    """A client for $CUEAPI_BASE_URL / $CUEAPI_API_KEY, or for an embedded server."""
    if os.environ.get("CUEAPI_API_KEY"):
        with CueClient() as client:
            yield client
        return
    from cuemsg.testing import run_server

    with run_server(db=":memory:") as srv, CueClient(srv.api_key, srv.base_url) as client:
        yield client


def main() -> None:
    with connect() as client:
        workers = [
            Mailbox.open(client, "pricing", worker_id=f"pricer-{i}", poll_wait=1) for i in range(3)
        ]

        def pricer(box: Mailbox) -> Callable[[Message[Quote]], Price]:
            def price(msg: Message[Quote]) -> Price:
                quote = msg.body
                if quote.item not in PRICES:
                    raise KeyError(f"no price for {quote.item!r}")
                total = PRICES[quote.item] * quote.qty
                return Price(item=quote.item, total=total, worker=box.worker_id)

            return price

        def serve(box: Mailbox) -> None:
            box.serve(pricer(box), type=Quote)  # one handler at a time per worker

        threads = [threading.Thread(target=serve, args=(w,)) for w in workers]
        for t in threads:
            t.start()

        shop = Mailbox.open(client, "shop", poll_wait=1)
        items = [("apple", "pear", "plum")[n % 3] for n in range(30)]

        def ask(n: int) -> Price:
            quote = Quote(item=items[n], qty=n + 1)
            return shop.request(workers[0].address, quote, type=Price, timeout=30)

        with ThreadPoolExecutor(30) as pool:
            answers = list(pool.map(ask, range(30)))
        for n, answer in enumerate(answers[:5]):
            print(f"request {n}: {items[n]} x{n + 1} = {answer.total} (by {answer.worker})")
        print("...")
        wrong = [a for n, a in enumerate(answers) if a.total != PRICES[items[n]] * (n + 1)]
        print(f"{len(answers)} replies, {len(wrong)} mismatched")
        by_worker = Counter(a.worker for a in answers)
        print("answered per worker:", dict(sorted(by_worker.items())))
        try:
            shop.request(workers[0].address, Quote(item="durian", qty=1), timeout=30)
        except RemoteError as err:
            print(f"remote error: {err.type}: {err.message}")
        for w in workers:
            w.stop()
        for t in threads:
            t.join()
        shop.close()
        for w in workers:
            w.close()


if __name__ == "__main__":
    main()
