"""Benchmark guest in Python, the twin of the Rust bench guests
(tests/fixtures/bench-assign-add and bench-cluster's ``assign-add``), for
host/benches/python.rs. Prints ``<metric> <value>`` lines.

- ``local ROUNDS ITERS``: ``sess.run(inc)`` in a local session; ``us_per_run`` per round.
- ``assign-add ROUNDS ITERS``: ``var`` on ``/job:local/task:0``, run from
  this program's task; ``us_per_run`` per round, then ``final``.
- ``sleep SECS``: prints ``sleeping`` and sleeps (an idle program).
"""

import time

import weft


def timed(sess, op, rounds, iters):
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iters):
            sess.run(op)
        print("us_per_run", (time.perf_counter() - start) * 1e6 / iters)


def main(args):
    mode = args[0] if args else "local"
    rounds, iters = (int(args[1]), int(args[2])) if len(args) > 2 else (10, 500)
    if mode == "local":
        var = weft.Variable(0.0, name="var")
        inc = var.assign_add(1.0).op
        sess = weft.Session()
        sess.run(weft.global_variables_initializer())
        sess.run(inc)
        timed(sess, inc, rounds, iters)
        print("final", sess.run(var))
    elif mode == "assign-add":
        with weft.device("/job:local/task:0"):
            var = weft.Variable(0.0, name="var")
        inc = var.assign_add(1.0).op
        sess = weft.Session("")
        sess.run(weft.global_variables_initializer())
        sess.run(inc)
        timed(sess, inc, rounds, iters)
        print("final", sess.run(var))
    elif mode == "sleep":
        print("sleeping", flush=True)
        time.sleep(float(args[1]) if len(args) > 1 else 600)


WitWorld = weft.worker(main)
