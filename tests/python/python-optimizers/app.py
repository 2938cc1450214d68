"""Each optimizer of the Python SDK minimizes ``(w - 3)^2`` from 0: prints
``w`` after its first step (which the update rule fixes exactly), then
after 300 steps, the global step and the slot variables it made, for
tests/all/python.rs."""

import weft


def ops():
    """More of the op library: each result printed."""
    sess = weft.Session()
    t = weft.constant([-1.0, 2.0])
    print("relu", sess.run(weft.relu(t)))
    print("sigmoid tanh", sess.run([weft.sigmoid(0.0), weft.tanh(0.0)]))
    print("softmax", sess.run(weft.softmax(weft.constant([0.0, 0.0]))))
    print("argmax", sess.run(weft.argmax(weft.constant([1.0, 3.0, 2.0]))))
    print("concat", sess.run(weft.concat([weft.constant([1.0]), weft.constant([2.0, 3.0])], axis=0)))
    print("filled", sess.run(weft.constant(7.0, shape=[2, 2])))
    print("reshaped", sess.run(weft.constant([1, 2, 3, 4], shape=[2, 2])))
    print("same op", t.op == t.op, {t: "found"}[weft.Tensor(t.graph, t.op.id, 0)])


def main(args):
    if args == ["ops"]:
        ops()
        return
    optimizers = [
        weft.train.GradientDescentOptimizer(0.1),
        weft.train.MomentumOptimizer(0.05, 0.9),
        weft.train.RMSPropOptimizer(0.05),
        weft.train.AdamOptimizer(0.1),
    ]
    for opt in optimizers:
        g = weft.Graph()
        with g.as_default():
            w = weft.Variable(0.0, name="w")
            step = weft.train.get_or_create_global_step()
            loss = weft.square(w - 3.0)
            train = opt.minimize(loss, global_step=step)
            sess = weft.Session()
            sess.run(weft.global_variables_initializer())
            sess.run(train)
            first = f"{opt.name}: after one step w={sess.run(w):.4f}"
            if isinstance(opt, weft.train.AdamOptimizer):
                powers = sess.run(["beta1_power:0", "beta2_power:0"])
                first += " beta powers=%.4f %.6f" % tuple(powers)
            print(first)
            for _ in range(299):
                sess.run(train)
            slots = sorted(v.name for v in weft.global_variables() if v.name not in ("w", "global_step"))
            print(f"{opt.name}: w={sess.run(w):.2f} step={sess.run(step)} slots={slots}")


WitWorld = weft.worker(main)
