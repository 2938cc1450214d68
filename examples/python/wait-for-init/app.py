"""S8 of the seed ("Who's responsible for initializing shared
variables?"), in Python: task 1 initializes after a delay; task 0 waits
with ``report_uninitialized_variables``, then carries on. Args:
``[delay-seconds] [interval-ms]`` (defaults 3 and 1000). Prints what
examples/wait-for-init (Rust) prints."""

from time import sleep

import weft


def main(args):
    delay = int(args[0]) if args else 3
    interval = (int(args[1]) if len(args) > 1 else 1000) / 1000.0
    weft.Variable(0.0, name="var")
    sess = weft.Session("")
    _, task = weft.train.task_identity()
    if task == 0:
        report = weft.report_uninitialized_variables()
        print("Server 1: waiting for connection...")
        names = sess.run(report)
        print("Server 1: uninitialized: [%s]" % ", ".join('"%s"' % n.decode() for n in names))
        while sess.run(report):
            print("Server 1: waiting for initialization...")
            sleep(interval)
        print("Server 1: variables initialized!")
    else:
        for i in range(delay, 0, -1):
            print("Server 2: waiting %d seconds before initializing..." % i)
            sleep(interval)
        sess.run(weft.global_variables_initializer())
        print("Server 2: variables initialized")


WitWorld = weft.worker(main)
