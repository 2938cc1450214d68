"""S9 of the seed ("Example"), in Python: one parameter server and two
workers share ``var`` on ``/job:ps/task:0``; each worker adds 1.0 five
times, and the ps reads exactly 10.0 once both are done (a second
variable counts the workers that finished, where the seed's ps blocked
forever). Every task runs this module; the first argument is the pause
between steps in milliseconds (default 1000). Prints what
examples/parameter-server (Rust) prints."""

from time import sleep

import weft


def main(args):
    interval = (int(args[0]) if args else 1000) / 1000.0
    job, task = weft.train.task_identity()
    cluster = weft.train.ClusterSpec.current()

    with weft.device("/job:ps/task:0"):
        var = weft.Variable(0.0, name="var")
        workers_done = weft.Variable(0.0, name="workers_done")

    server = weft.train.Server(cluster, job_name=job, task_index=task)
    sess = weft.Session(target=server.target)
    workers = cluster.num_tasks("worker")

    if job == "ps":
        print("Parameter server: waiting for cluster connection...")
        sess.run(weft.report_uninitialized_variables())
        print("Parameter server: cluster ready!")

        print("Parameter server: initializing variables...")
        sess.run(weft.global_variables_initializer())
        print("Parameter server: variables initialized")

        for i in range(5):
            val = sess.run(var)
            print("Parameter server: var has value %.1f" % val)
            sleep(interval)

        while sess.run(workers_done) < workers:
            sleep(interval / 10)
        print("Parameter server: final value of var: %.1f" % sess.run(var))
    else:
        print("Worker %d: waiting for cluster connection..." % task)
        sess.run(weft.report_uninitialized_variables())
        print("Worker %d: cluster ready!" % task)

        while sess.run(weft.report_uninitialized_variables()):
            print("Worker %d: waiting for variable initialization..." % task)
            sleep(interval)
        print("Worker %d: variables initialized" % task)

        increment = var.assign_add(1.0)
        for i in range(5):
            print("Worker %d: incrementing var" % task)
            sess.run(increment)
            sleep(interval)

        sess.run(workers_done.assign_add(1.0))
        print("Worker %d: done" % task)


WitWorld = weft.worker(main)
