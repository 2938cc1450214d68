"""Asynchronous parameter-server training in Python, the twin of
examples/ps-linear-regression (Rust), printing what it prints:
multi-output linear regression ``y = x.W + b`` with W (dim x dim) and b on
``/job:ps/task:0`` through ``replica_device_setter``, each worker drawing
batches of 64 in-graph from a fixed teacher plus 0.01 noise, plain SGD at
0.01 through a training session that rides out a restarted ps.

Args: ``[target-loss] [max-steps-per-worker] [eval-every] [dim]``
(defaults 0.05, 20000, 100, 1024), then ``--checkpoint PREFIX`` and
``--save-every N``.
"""

import time

import weft

BATCH = 64
LEARNING_RATE = 0.01


def parse(args):
    split = next((i for i, a in enumerate(args) if a.startswith("--")), len(args))
    positional, options = args[:split], args[split:]
    values = [float(a) for a in positional] + [None] * 4
    parsed = {
        "target": values[0] if values[0] is not None else 0.05,
        "max_steps": int(values[1]) if values[1] is not None else 20000,
        "eval_every": max(1, int(values[2])) if values[2] is not None else 100,
        "dim": int(values[3]) if values[3] is not None else 1024,
        "checkpoint": None,
        "save_every": None,
    }
    it = iter(options)
    for flag in it:
        if flag == "--checkpoint":
            parsed["checkpoint"] = next(it)
        elif flag == "--save-every":
            parsed["save_every"] = int(next(it))
        else:
            raise weft.errors.InvalidArgumentError(f"bad argument {flag}")
    return parsed


def local(name, shape, stddev, seed):
    """A variable of this worker alone (placed on it, not by the setter),
    from a seeded random op: every worker gets the same teacher and eval set."""
    return weft.Variable(weft.random_normal(shape, 0.0, stddev, seed=seed), name=name, trainable=False)


def squared_error(x, w, b, y):
    err = weft.square(weft.matmul(x, w) + b - y)
    return weft.reduce_mean(weft.reduce_sum(err, axis=1))


def build(job, worker, ps_job, ps_tasks, d):
    setter = weft.train.replica_device_setter(
        ps_tasks=ps_tasks, ps_device=f"/job:{ps_job}", worker_device=f"/job:{job}/task:{worker}"
    )
    with weft.device(setter):
        w = weft.Variable(weft.zeros([d, d]), name="W")
        b = weft.Variable(weft.zeros([d]), name="b")
        step = weft.train.get_or_create_global_step()
        done = weft.Variable(0.0, name="workers_done", trainable=False)
        with weft.device(f"/job:{job}/task:{worker}"):
            w_true = local("W_true", [d, d], 1.0 / d**0.5, 1)
            b_true = local("b_true", [d], 1.0, 2)
            x_eval = local("x_eval", [256, d], 1.0, 3)
        local_init = weft.group(w_true.initializer, b_true.initializer, x_eval.initializer)

        x = weft.random_normal([BATCH, d])
        noise = weft.random_normal([BATCH, d]) * 0.01
        y = weft.matmul(x, w_true) + b_true + noise
        loss = squared_error(x, w, b, y)
        train = weft.train.GradientDescentOptimizer(LEARNING_RATE).minimize(loss, global_step=step, var_list=[w, b])

        y_eval = weft.matmul(x_eval, w_true) + b_true
        eval_loss = squared_error(x_eval, w, b, y_eval)
    return dict(w=w, b=b, step=step, done=done, local_init=local_init, train=train, eval_loss=eval_loss)


def serve_parameters(model, workers, dim):
    sess = weft.Session("")
    print(f"Parameter server: holding W [{dim}, {dim}] and b [{dim}] for {workers} workers")
    while workers > 0:
        try:
            if sess.run(model["done"]) >= workers:
                break
        except weft.errors.OpError:
            pass
        time.sleep(0.2)
    print(f"Parameter server: training done after {sess.run(model['step'])} updates in all")


def train(model, worker, args):
    ts = weft.train.TrainingSession(
        is_chief=worker == 0,
        checkpoint_prefix=args["checkpoint"],
        save_every_steps=args["save_every"],
        global_step=model["step"],
        saved_variables=[model["w"], model["b"], model["step"], model["done"]],
        local_init=model["local_init"],
    )
    initial = ts.run(model["eval_loss"])
    print(f"Worker {worker}: eval loss {initial:.1f} at the start")
    started = time.monotonic()
    steps, loss = 0, initial
    while steps < args["max_steps"] and loss > args["target"]:
        for _ in range(min(args["eval_every"], args["max_steps"] - steps)):
            ts.run(model["train"])
            steps += 1
        loss = ts.run(model["eval_loss"])
        rate = steps / (time.monotonic() - started)
        print(f"Worker {worker}: step {steps}: eval loss {loss:.4f}, {rate:.1f} steps/s")
    rate = steps / (time.monotonic() - started)
    global_steps = ts.run(model["step"])
    if loss <= args["target"]:
        print(
            f"Worker {worker}: reached eval loss {loss:.4f} <= {args['target']:g} after {steps} steps "
            f"({global_steps} updates in all), {rate:.1f} steps/s"
        )
    else:
        print(f"Worker {worker}: stopped at the step budget ({steps} steps) with eval loss {loss:.4f} > {args['target']:g}")
    if args["checkpoint"] is not None and worker == 0:
        print(f"Worker {worker}: saved {ts.save()}")
    ts.run(model["done"].assign_add(1.0))


def main(argv):
    args = parse(argv)
    job, task = weft.train.task_identity()
    cluster = weft.train.ClusterSpec.current()
    ps_tasks, workers = cluster.num_tasks("ps"), cluster.num_tasks("worker")
    if ps_tasks == 0:
        # No ps job (`weft run` alone): variables and compute on this task.
        model = build(job, task, job, 1, args["dim"])
    else:
        model = build("worker", task if job == "worker" else 0, "ps", ps_tasks, args["dim"])
    worker = task if job == "worker" else 0
    if job == "ps":
        serve_parameters(model, workers, args["dim"])
    else:
        train(model, worker, args)


WitWorld = weft.worker(main)
