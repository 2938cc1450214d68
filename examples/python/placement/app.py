"""S3 of the seed ("Placement"), in Python: which device ran which node,
from full traces, as the seed's ``run_with_location_trace`` prints it.
Run it as task 0 of ``{"local": [task0, task1]}``. Prints what
examples/placement (Rust) prints."""

import weft


def run_with_location_trace(sess, op):
    run_options = weft.RunOptions(trace_level=weft.RunOptions.FULL_TRACE)
    run_metadata = weft.RunMetadata()
    sess.run(op, options=run_options, run_metadata=run_metadata)
    for device in run_metadata.step_stats.dev_stats:
        print(device.device)
        for node in device.node_stats:
            print("  ", node.node_name)


def main(args):
    cluster = weft.train.ClusterSpec.current()
    server1 = weft.train.Server(cluster, job_name="local", task_index=0)
    server2 = weft.train.Server(cluster, job_name="local", task_index=1)

    var = weft.Variable(initial_value=0.0, name="var")
    sess1 = weft.Session(server1.target)
    sess2 = weft.Session(server2.target)
    sess1.run(weft.global_variables_initializer())
    # The seed had already run one assign_add on this graph.
    var.assign_add(1.0)

    print("# sess1.run(var)")
    run_with_location_trace(sess1, var)
    print("# sess1.run(var.assign_add(1.0))")
    run_with_location_trace(sess1, var.assign_add(1.0))
    print("# sess2.run(var)")
    run_with_location_trace(sess2, var)

    with weft.device("/job:local/task:0"):
        var1 = weft.Variable(0.0, name="var1")
    with weft.device("/job:local/task:1"):
        var2 = weft.Variable(0.0, name="var2")
    sess1.run(weft.global_variables_initializer())
    print("# sess1.run(var1)")
    run_with_location_trace(sess1, var1)
    print("# sess1.run(var2)")
    run_with_location_trace(sess1, var2)
    print("# sess2.run(var2)")
    run_with_location_trace(sess2, var2)
    print("# sess2.run(var1)")
    run_with_location_trace(sess2, var1)


WitWorld = weft.worker(main)
