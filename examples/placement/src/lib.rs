//! S3 of the seed ("Placement"): which device ran which node, from full
//! traces. Pass `--chrome-trace` to also print the last trace as Chrome
//! trace JSON (open it in Perfetto).

use weft_sdk::{Graph, Output, Result, RunOutput, Session, Variable, VariableOptions};

fn run_with_location_trace(sess: &Session, target: impl Into<Output>) -> Result<RunOutput> {
    let out = sess.runner().fetch(target).trace(true).run()?;
    for device in &out.step_stats {
        println!("{}", device.device);
        for node in &device.nodes {
            println!("   {}", node.node_name);
        }
    }
    Ok(out)
}

fn pinned(graph: &Graph, name: &str, device: &str) -> Result<Variable> {
    let options = VariableOptions { device: Some(device.to_string()), trainable: true };
    Variable::with_options(graph, 0.0f32, name, options)
}

fn run(args: Vec<String>) -> Result<()> {
    let graph = Graph::new();
    let var = Variable::new(&graph, 0.0f32, "var")?;
    let sess1 = Session::new("/job:local/task:0", &graph)?;
    let sess2 = Session::new("/job:local/task:1", &graph)?;
    sess1.run(graph.global_variables_initializer()?)?;
    // The seed had already run one assign_add on this graph.
    var.assign_add(1.0f32)?;

    println!("# sess1.run(var)");
    run_with_location_trace(&sess1, &var)?;
    println!("# sess1.run(var.assign_add(1.0))");
    run_with_location_trace(&sess1, var.assign_add(1.0f32)?)?;
    println!("# sess2.run(var)");
    run_with_location_trace(&sess2, &var)?;

    let var1 = graph.device("/job:local/task:0", |g| Variable::new(g, 0.0f32, "var1"))?;
    let var2 = pinned(&graph, "var2", "/job:local/task:1")?;
    sess1.run(graph.global_variables_initializer()?)?;
    println!("# sess1.run(var1)");
    run_with_location_trace(&sess1, &var1)?;
    println!("# sess1.run(var2)");
    run_with_location_trace(&sess1, &var2)?;
    println!("# sess2.run(var2)");
    run_with_location_trace(&sess2, &var2)?;
    println!("# sess2.run(var1)");
    let last = run_with_location_trace(&sess2, &var1)?;
    if args.iter().any(|a| a == "--chrome-trace") {
        println!("{}", last.chrome_trace_json());
    }
    Ok(())
}

weft_sdk::export_worker!(run);
