//! S4 of the seed ("Who builds the graph?"): graphs are never shared, each
//! program builds its own; variables are shared by name. With no argument
//! one program shows both graphs; `set` and `get` split it across two
//! programs (on two hosts): `set` assigns 1.0, `get` reads it back.

use weft_sdk::{Graph, Result, Session, Variable};

fn names(graph: &Graph) -> String {
    let ops: Vec<String> = graph.operations().into_iter().map(|o| format!("'{}' ({})", o.name, o.op_type)).collect();
    format!("[{}]", ops.join(", "))
}

fn run(args: Vec<String>) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("set") => {
            let graph = Graph::new();
            let var = Variable::new(&graph, 0.0f32, "var")?;
            Session::new("/job:local/task:0", &graph)?.run(var.assign(1.0f32)?)?;
            println!("set var to 1.0");
        }
        Some("get") => {
            let graph = Graph::new();
            let var = Variable::new(&graph, 0.0f32, "var")?;
            println!("var = {}", Session::new("/job:local/task:1", &graph)?.fetch(&var)?);
        }
        _ => {
            let graph1 = Graph::new();
            let var1 = Variable::new(&graph1, 0.0f32, "var")?;
            let sess1 = Session::new("/job:local/task:0", &graph1)?;
            println!("graph 1: {}", names(&graph1));

            let graph2 = Graph::new();
            let sess2 = Session::new("/job:local/task:1", &graph2)?;
            println!("graph 2: {}", names(&graph2));

            let var2 = Variable::new(&graph2, 0.0f32, "var")?;
            sess1.run(var1.assign(1.0f32)?)?;
            println!("sess2.run(var2) = {}", sess2.fetch(&var2)?);
        }
    }
    Ok(())
}

weft_sdk::export_worker!(run);
