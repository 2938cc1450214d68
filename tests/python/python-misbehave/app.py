"""A Python worker that misbehaves on purpose, one way per argument, for
tests/all/python.rs: bad input from Python gets the same named errors as
from Rust, and the host carries on."""

import weft


def caught(f):
    try:
        f()
    except weft.errors.OpError as e:
        print(f"{type(e).__name__}: {e.message}")


def main(args):
    mode = args[0] if args else "ok"
    if mode == "ok":
        print("fine")
    elif mode == "shapes":
        a = weft.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        caught(lambda: weft.matmul(a, a))
    elif mode == "device":
        def place():
            with weft.device("/job:nowhere/task:3"):
                v = weft.Variable(1.0, name="v")
            weft.Session("").run(v.initializer)
        caught(place)
    elif mode == "uninitialized":
        v = weft.Variable(1.0, name="v")
        caught(lambda: weft.Session().run(v))
    elif mode == "feed":
        x = weft.placeholder(weft.float32, shape=[2])
        caught(lambda: weft.Session().run(x * 2.0, feed_dict={x: [1.0, 2.0, 3.0]}))
    elif mode == "int-float":
        step = weft.Variable(0, name="step", dtype=weft.int64)
        caught(lambda: step.assign_add(0.5))
    elif mode == "two-graphs":
        other = weft.Graph()
        with other.as_default():
            foreign = weft.constant(1.0)
        caught(lambda: weft.Variable(0.0, name="v").assign(foreign))
    elif mode == "escape":
        v = weft.Variable(1.0, name="v")
        weft.Session().run(v)
    elif mode == "raise":
        print(1 / 0)
    elif mode == "loop":
        while True:
            pass


WitWorld = weft.worker(main)
