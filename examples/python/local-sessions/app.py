"""S1 of the seed ("Introduction"), in Python: every ``weft.Session()`` is
its own engine, so two local sessions on one graph hold separate values
of ``var``. Prints what examples/local-sessions (Rust) prints."""

import weft


def main(args):
    var = weft.Variable(initial_value=0.0, name="var")

    sess1 = weft.Session()
    sess2 = weft.Session()

    sess1.run(weft.global_variables_initializer())
    sess2.run(weft.global_variables_initializer())

    print("Initial value of var in session 1:", sess1.run(var))
    print("Initial value of var in session 2:", sess2.run(var))

    sess1.run(var.assign_add(1.0))
    print("Incremented var in session 1")

    print("Value of var in session 1:", sess1.run(var))
    print("Value of var in session 2:", sess2.run(var))


WitWorld = weft.worker(main)
