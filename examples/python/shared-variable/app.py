"""S2 of the seed ("Distributed TensorFlow"), in Python: in a cluster
``{"local": [task0, task1]}``, sessions on both tasks share ``var``,
which (unplaced) lives on the cluster's first task. Run it as any task.
Prints what examples/shared-variable (Rust) prints."""

import weft


def main(args):
    cluster = weft.train.ClusterSpec.current()

    server1 = weft.train.Server(cluster, job_name="local", task_index=0)
    server2 = weft.train.Server(cluster, job_name="local", task_index=1)

    var = weft.Variable(initial_value=0.0, name="var")
    sess1 = weft.Session(server1.target)
    sess2 = weft.Session(server2.target)

    sess1.run(weft.global_variables_initializer())
    sess2.run(weft.global_variables_initializer())

    print("Initial value of var in session 1:", sess1.run(var))
    print("Initial value of var in session 2:", sess2.run(var))

    sess1.run(var.assign_add(1.0))
    print("Incremented var in session 1")

    print("Value of var in session 1:", sess1.run(var))
    print("Value of var in session 2:", sess2.run(var))


WitWorld = weft.worker(main)
