//! S5 of the seed: in-graph and between-graph replication, in a cluster
//! `{"ps": [ps0], "worker": [w0, w1]}`.
//!
//! - `in-graph` (run it once, as any task): one program builds one graph with
//!   the parameters `w` on `/job:ps/task:0` and a part per worker on
//!   `/job:worker/task:N`, and runs it.
//! - `between-graph` (run it as each worker): each program builds only the
//!   shared `w` and its own part, and adds its result to `total` on the ps.

use weft_sdk::{Graph, Output, Result, Session, Variable, device};

/// A worker's part: its data (2 rows) times the shared weights, summed.
fn worker_part(graph: &Graph, w: &Variable, worker: u32) -> Result<Output> {
    graph.device(&format!("/job:worker/task:{worker}"), |g| {
        let base = (worker * 2) as f32;
        let x = g.constant([[base + 1.0, 1.0], [base + 2.0, 1.0]])?;
        g.sum(g.matmul(x, w.value())?, None, false)
    })
}

fn weights(graph: &Graph) -> Result<Variable> {
    graph.device("/job:ps/task:0", |g| Variable::new(g, [[2.0f32], [0.5]], "w"))
}

fn run(args: Vec<String>) -> Result<()> {
    let me = device::identity();
    match args.first().map(String::as_str) {
        Some("between-graph") => {
            let graph = Graph::new();
            let w = weights(&graph)?;
            let total = graph.device("/job:ps/task:0", |g| Variable::new(g, 0.0f32, "total"))?;
            let part = worker_part(&graph, &w, me.task)?;
            let sess = Session::new("", &graph)?;
            let report = graph.report_uninitialized_variables()?;
            if me.task == 0 {
                sess.run(graph.global_variables_initializer()?)?;
            }
            while !sess.fetch(report)?.to_strings()?.is_empty() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let added = sess.fetch(total.assign_add(part)?)?;
            println!("worker {}: my part {}, total now includes it: {added}", me.task, sess.fetch(part)?);
        }
        _ => {
            let graph = Graph::new();
            let w = weights(&graph)?;
            let parts = [worker_part(&graph, &w, 0)?, worker_part(&graph, &w, 1)?];
            let total = graph.add(parts[0], parts[1])?;
            let sess = Session::new("", &graph)?;
            sess.run(graph.global_variables_initializer()?)?;
            let out = sess.runner().fetch(parts[0]).fetch(parts[1]).fetch(total).trace(true).run()?;
            println!("in-graph: worker parts {} and {}, total {}", out.values[0], out.values[1], out.values[2]);
            for d in &out.step_stats {
                let nodes: Vec<&str> =
                    d.nodes.iter().map(|n| n.node_name.as_str()).filter(|n| *n != "_SOURCE").collect();
                println!("  {}: {}", d.device, nodes.join(", "));
            }
        }
    }
    Ok(())
}

weft_sdk::export_worker!(run);
