//! S2 of the seed ("Distributed TensorFlow"): in a cluster
//! `{"local": [task0, task1]}`, sessions on both tasks share `var`, which
//! (unplaced) lives on the cluster's first task. Run it as any task.

use weft_sdk::{Graph, Result, Session, Variable};

fn run(_args: Vec<String>) -> Result<()> {
    let graph = Graph::new();
    let var = Variable::new(&graph, 0.0f32, "var")?;
    let sess1 = Session::new("/job:local/task:0", &graph)?;
    let sess2 = Session::new("/job:local/task:1", &graph)?;

    let init = graph.global_variables_initializer()?;
    sess1.run(init)?;
    sess2.run(init)?;

    println!("Initial value of var in session 1: {}", sess1.fetch(&var)?);
    println!("Initial value of var in session 2: {}", sess2.fetch(&var)?);

    sess1.run(var.assign_add(1.0f32)?)?;
    println!("Incremented var in session 1");

    println!("Value of var in session 1: {}", sess1.fetch(&var)?);
    println!("Value of var in session 2: {}", sess2.fetch(&var)?);
    Ok(())
}

weft_sdk::export_worker!(run);
