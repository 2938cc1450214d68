//! Real math on the host's kernels: fits `y = W·x + b` to noiseless data
//! by full-batch gradient descent, with the gradient written out by hand
//! (`∂L/∂W = 2/N · Xᵀ(XW + b − y)`) as MatMul, Sub, Mean and AssignSub ops.
//!
//! Args: `[steps] [learning-rate]` (defaults 200 and 0.1).

use weft_sdk::{DType, Graph, Result, Session, Tensor, Variable};

/// Inputs (N×2) and the targets the true model gives them.
fn data() -> (Tensor, Tensor) {
    const TRUE_W: [f32; 2] = [2.0, -3.0];
    const TRUE_B: f32 = 1.0;
    let xs: Vec<[f32; 2]> = (0..16).map(|i| [(i % 4) as f32 - 1.5, (i / 4) as f32 - 1.5]).collect();
    let ys: Vec<f32> = xs.iter().map(|x| TRUE_W[0] * x[0] + TRUE_W[1] * x[1] + TRUE_B).collect();
    let flat: Vec<f32> = xs.iter().flatten().copied().collect();
    (Tensor::new(&[16, 2], &flat).unwrap(), Tensor::new(&[16, 1], &ys).unwrap())
}

fn run(args: Vec<String>) -> Result<()> {
    let steps: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(200);
    let lr: f32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0.1);

    let g = Graph::new();
    let x = g.placeholder(DType::F32, &[-1, 2])?;
    let y = g.placeholder(DType::F32, &[-1, 1])?;
    let w = Variable::new(&g, g.random_normal(&[2, 1], 0.0, 0.1, Some(42))?, "w")?;
    let b = Variable::new(&g, g.zeros(&[1])?, "b")?;

    let prediction = g.add(g.matmul(x, w.value())?, b.value())?;
    let error = g.sub(prediction, y)?;
    let loss = g.mean(g.square(error)?, None, false)?;

    // Gradients of the mean squared error, written out; N is the batch size.
    let (xs, ys) = data();
    let scale = g.constant(2.0 / xs.shape()[0] as f32)?;
    let grad_w = g.mul(scale, g.matmul_transposed(x, error, true, false)?)?;
    let grad_b = g.mul(scale, g.sum(error, Some(&[0]), false)?)?;
    let rate = g.constant(lr)?;
    let train = g.group(&[w.assign_sub(g.mul(rate, grad_w)?)?.op(), b.assign_sub(g.mul(rate, grad_b)?)?.op()])?;

    let sess = Session::local(&g)?;
    sess.run(g.global_variables_initializer()?)?;
    for step in 0..=steps {
        let out = sess.runner().feed(x, xs.clone()).feed(y, ys.clone()).fetch(loss).run()?;
        if step % 50 == 0 || step == steps {
            println!("step {step:>4}: loss {:.6}", out.values[0].to_scalar::<f32>()?);
        }
        if step < steps {
            sess.runner().feed(x, xs.clone()).feed(y, ys.clone()).target(train).run()?;
        }
    }
    let w_val = sess.fetch(&w)?.to_vec::<f32>()?;
    let b_val = sess.fetch(&b)?.to_vec::<f32>()?;
    println!("fitted W = [{:.3}, {:.3}], b = {:.3} (true W = [2, -3], b = 1)", w_val[0], w_val[1], b_val[0]);
    Ok(())
}

weft_sdk::export_worker!(run);
