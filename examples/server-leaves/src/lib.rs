//! S7 of the seed ("What happens if a server leaves the cluster?"): task 0
//! runs a no-op on itself and one on task 1 in a loop, while task 1's host
//! leaves (its program ends after `leave-after-ms`). Runs on task 0 go on;
//! runs on task 1 fail at once with `unavailable` naming it; when task 1's
//! host is back, the same session works again.
//!
//! Args: `[iterations] [interval-ms] [leave-after-ms]` (defaults 10, 1000, 2000).

use std::time::Duration;

use weft_sdk::{Graph, Result, Session, device};

fn arg(args: &[String], i: usize, default: u64) -> u64 {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn run(args: Vec<String>) -> Result<()> {
    let (iterations, interval, leave_after) = (arg(&args, 0, 10), arg(&args, 1, 1000), arg(&args, 2, 2000));
    if device::identity().task == 1 {
        std::thread::sleep(Duration::from_millis(leave_after));
        println!("Server 2 dieing...");
        return Ok(());
    }
    let graph = Graph::new();
    let local = graph.device("/job:local/task:0", |g| g.no_op())?;
    let remote = graph.device("/job:local/task:1", |g| g.no_op())?;
    let sess = Session::new("", &graph)?;
    for _ in 0..iterations {
        sess.run(local)?;
        match sess.run(remote) {
            Ok(()) => println!("Server 1: no-op on task 1: success!"),
            Err(e) => println!("Server 1: no-op on task 1: {e}"),
        }
        std::thread::sleep(Duration::from_millis(interval));
    }
    Ok(())
}

weft_sdk::export_worker!(run);
