//! S9 of the seed: a parameter server and two workers in a cluster
//! `{"ps": [ps0], "worker": [w0, w1]}`, one module acting by its task.
//! `var` is pinned to `/job:ps/task:0`. The ps initializes it and prints it
//! five times; each worker waits for initialization, then increments it five
//! times. Workers count themselves done in `workers_done`, and the ps prints
//! the final value once both are: exactly 10.0, since `assign_add` is atomic.
//!
//! Args: `[interval-ms]` (default 1000).

use std::time::Duration;

use weft_sdk::{Graph, Result, Session, Variable, device};

fn run(args: Vec<String>) -> Result<()> {
    let interval = Duration::from_millis(args.first().and_then(|a| a.parse().ok()).unwrap_or(1000));
    let me = device::identity();
    let graph = Graph::new();
    let (var, done) = graph.device("/job:ps/task:0", |g| {
        Ok((Variable::new(g, 0.0f32, "var")?, Variable::new(g, 0.0f32, "workers_done")?))
    })?;
    let sess = Session::new("", &graph)?;
    let report = graph.report_uninitialized_variables()?;
    let workers = me.cluster.iter().find(|(job, _)| job == "worker").map_or(0, |(_, t)| t.len()) as f32;

    if me.job == "ps" {
        println!("Parameter server: waiting for cluster connection...");
        sess.fetch(report)?;
        println!("Parameter server: cluster ready!");
        println!("Parameter server: initializing variables...");
        sess.run(graph.global_variables_initializer()?)?;
        println!("Parameter server: variables initialized");
        for _ in 0..5 {
            println!("Parameter server: var has value {:.1}", sess.fetch(&var)?.to_scalar::<f32>()?);
            std::thread::sleep(interval);
        }
        while sess.fetch(&done)?.to_scalar::<f32>()? < workers {
            std::thread::sleep(interval / 10);
        }
        println!("Parameter server: final value of var: {:.1}", sess.fetch(&var)?.to_scalar::<f32>()?);
    } else {
        let n = me.task;
        println!("Worker {n}: waiting for cluster connection...");
        sess.fetch(report)?;
        println!("Worker {n}: cluster ready!");
        while !sess.fetch(report)?.to_strings()?.is_empty() {
            println!("Worker {n}: waiting for variable initialization...");
            std::thread::sleep(interval);
        }
        println!("Worker {n}: variables initialized");
        let increment = var.assign_add(1.0f32)?;
        for _ in 0..5 {
            println!("Worker {n}: incrementing var");
            sess.run(increment)?;
            std::thread::sleep(interval);
        }
        sess.run(done.assign_add(1.0f32)?)?;
        println!("Worker {n}: done");
    }
    Ok(())
}

weft_sdk::export_worker!(run);
