//! S8 of the seed ("Who's responsible for initializing shared variables?"):
//! task 1 initializes after a delay; task 0 waits with
//! `report_uninitialized_variables`, then carries on.
//!
//! Args: `[delay-seconds] [interval-ms]` (defaults 3 and 1000).

use std::time::Duration;

use weft_sdk::{Graph, Result, Session, Variable, device};

fn run(args: Vec<String>) -> Result<()> {
    let delay: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let interval = Duration::from_millis(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000));
    let graph = Graph::new();
    Variable::new(&graph, 0.0f32, "var")?;
    let sess = Session::new("", &graph)?;
    if device::identity().task == 0 {
        let report = graph.report_uninitialized_variables()?;
        println!("Server 1: waiting for connection...");
        println!("Server 1: uninitialized: {}", sess.fetch(report)?);
        while !sess.fetch(report)?.to_strings()?.is_empty() {
            println!("Server 1: waiting for initialization...");
            std::thread::sleep(interval);
        }
        println!("Server 1: variables initialized!");
    } else {
        for i in (1..=delay).rev() {
            println!("Server 2: waiting {i} seconds before initializing...");
            std::thread::sleep(interval);
        }
        sess.run(graph.global_variables_initializer()?)?;
        println!("Server 2: variables initialized");
    }
    Ok(())
}

weft_sdk::export_worker!(run);
