//! S6 of the seed ("before all servers have connected"): task 0 runs a
//! no-op placed on task 1 before task 1's host is up. The run waits (the
//! host logs which task and address it waits for) and succeeds as soon as
//! task 1 is up. Task 1's program just says it is connected.
//!
//! Args: `[timeout-ms]`: with a session timeout, the run fails with
//! `deadline-exceeded` naming task 1 instead of waiting on.

use weft_sdk::{Graph, Result, Session, SessionOptions, device};

fn run(args: Vec<String>) -> Result<()> {
    let me = device::identity();
    if me.task == 1 {
        println!("server 2: connected!");
        return Ok(());
    }
    let graph = Graph::new();
    let no_op = graph.device("/job:local/task:1", |g| g.no_op())?;
    let timeout_ms = args.first().and_then(|a| a.parse().ok());
    let sess = Session::with_options("", &graph, SessionOptions { timeout_ms, ..Default::default() })?;
    println!("server 1: running no-op...");
    sess.run(no_op)?;
    println!("server 1: no-op run!");
    Ok(())
}

weft_sdk::export_worker!(run);
