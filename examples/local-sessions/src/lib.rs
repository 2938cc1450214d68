//! S1 of the seed ("Introduction"): every `tf.Session()` is its own engine,
//! so two local sessions on the same graph hold separate values of `var`.

use weft_sdk::{Graph, Result, Session, Variable};

fn run(_args: Vec<String>) -> Result<()> {
    let graph = Graph::new();
    let var = Variable::new(&graph, 0.0f32, "var")?;
    let init = graph.global_variables_initializer()?;

    let sess1 = Session::local(&graph)?;
    let sess2 = Session::local(&graph)?;
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
