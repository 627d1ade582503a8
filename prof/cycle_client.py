"""Profile the client on row 2a's cycle: python cycle_client.py SRC SECONDS [noprof|cprof|spy]"""

import cProfile
import pstats
import subprocess
import sys
import time
from pathlib import Path

src = sys.argv[1]
sys.path.insert(0, src)
from bench.procs import start_server  # noqa: E402
from cuemsg import CueClient  # noqa: E402
from cuemsg.mailbox import Mailbox  # noqa: E402

assert __import__("cuemsg").__file__.startswith(src), __import__("cuemsg").__file__
secs = float(sys.argv[2])
mode = sys.argv[3] if len(sys.argv) > 3 else "noprof"
wd = Path(f"/tmp/p6wd-{Path(src).name}")
wd.mkdir(exist_ok=True)
for f in wd.glob("*.db*"):
    f.unlink()
srv = start_server(str(wd / "p.db"), label="p", workdir=wd)
try:
    client = CueClient(srv.api_key, srv.base_url)
    client.extensions
    mb = Mailbox.open(client, "prof")
    it = mb.receive(wait=5.0)
    body = {"seq": 0, "pad": "x" * 200}
    for i in range(50):
        mb.send(mb.address, body)
        next(it)
    import os
    import threading

    spy = None
    if mode == "spy":
        spy = subprocess.Popen(
            ["/work/main/.venv/bin/py-spy", "record", "-p", str(os.getpid()), "-d", str(int(secs)),
             "-r", "500", "--format", "raw", "-o", "/tmp/p6spy.txt", "--nonblocking", "--threads"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    prof = cProfile.Profile() if mode == "cprof" else None
    hb = [t for t in threading.enumerate() if t.name.startswith("cuemsg-heartbeats")]
    import psutil

    me = psutil.Process()
    tids = {t.native_id for t in hb}
    def hb_cpu():
        return sum(t.user_time + t.system_time for t in me.threads() if t.id in tids)
    ctx0 = me.num_ctx_switches()
    h0 = hb_cpu()
    if prof:
        prof.enable()
    n = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    while time.perf_counter() - t0 < secs - 1:
        mb.send(mb.address, body)
        next(it)
        n += 1
    el = time.perf_counter() - t0
    c1 = time.process_time()
    if prof:
        prof.disable()
    ctx1 = me.num_ctx_switches()
    print(f"{n / el:.0f} msg/s client cpu {1000 * (c1 - c0) / n:.3f} ms/msg "
          f"hb-thread {1000 * (hb_cpu() - h0) / n:.3f} ms/msg "
          f"vol-ctx/msg {(ctx1.voluntary - ctx0.voluntary) / n:.2f}")
    if spy:
        spy.wait()
    if prof:
        pstats.Stats(prof).sort_stats(sys.argv[4] if len(sys.argv) > 4 else "tottime").print_stats(45)
finally:
    srv.stop()
