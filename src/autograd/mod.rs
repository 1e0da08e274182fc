//! Reverse-mode automatic differentiation.
//!
//! Ops record their inputs (an [`Op`]) only when grad mode is on and one input tracks
//! gradients. [`Tensor::backward`] sorts the recorded graph topologically, walks it from the
//! output back to the leaves and accumulates: a tensor used twice receives the sum of its
//! gradients, and gradients of broadcast inputs are reduced to the input's shape by the
//! broadcast op's own backward.

mod backward;
mod op;

pub use op::Op;

use crate::{Error, Result, Tensor, TensorId};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the autograd graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped.
pub struct GradModeGuard {
    previous: bool,
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Turns off graph recording until the returned guard is dropped (evaluation, sampling,
/// optimizer updates).
pub fn no_grad() -> GradModeGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(false));
    GradModeGuard { previous }
}

/// The record for a new op result: `Some` only when grad mode is on and an input tracks
/// gradients, so inference builds no graph at all.
pub(crate) fn record(inputs: &[&Tensor], op: impl FnOnce() -> Op) -> Option<Op> {
    if is_grad_enabled() && inputs.iter().any(|t| t.tracks_grad()) {
        Some(op())
    } else {
        None
    }
}

/// Gradients of variables, keyed by tensor identity.
#[derive(Default, Clone)]
pub struct GradStore {
    grads: HashMap<TensorId, Tensor>,
}

impl GradStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The gradient of `t`, if it received one.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.grads.get(&t.id())
    }

    /// Sets the gradient of `t`.
    pub fn insert(&mut self, t: &Tensor, grad: Tensor) {
        self.grads.insert(t.id(), grad);
    }

    /// Removes and returns the gradient of `t`.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.grads.remove(&t.id())
    }

    /// Forgets every gradient (the equivalent of zeroing them before the next step).
    pub fn zero(&mut self) {
        self.grads.clear();
    }

    /// Number of tensors holding a gradient.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// True when no gradient is held.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    fn accumulate(&mut self, id: TensorId, grad: Tensor) -> Result<()> {
        let sum = match self.grads.remove(&id) {
            Some(prev) => prev.add(&grad)?,
            None => grad,
        };
        self.grads.insert(id, sum);
        Ok(())
    }
}

/// Nodes reachable from `root` through tensors that track gradients, inputs before the
/// ops that use them.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(op) = t.op() {
            for input in op.inputs() {
                if input.tracks_grad() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}

impl Tensor {
    /// Gradients of this scalar with respect to every variable it depends on.
    pub fn backward(&self) -> Result<GradStore> {
        let mut store = GradStore::new();
        self.backward_into(&mut store)?;
        Ok(store)
    }

    /// Gradients of `sum(self * grad)`: back-propagates `grad` as this tensor's own
    /// gradient (PyTorch's `backward(gradient)`), for a tensor of any shape. `grad` must
    /// have this tensor's shape, dtype and device.
    pub fn backward_with(&self, grad: &Tensor) -> Result<GradStore> {
        if grad.shape() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: "backward_with",
                lhs: self.shape().to_vec(),
                rhs: grad.shape().to_vec(),
            });
        }
        if grad.dtype() != self.dtype() || grad.device() != self.device() {
            return Err(Error::invalid(
                "backward_with",
                format!(
                    "the gradient is {} on {}, the tensor {} on {}",
                    grad.dtype(),
                    grad.device(),
                    self.dtype(),
                    self.device()
                ),
            ));
        }
        let mut store = GradStore::new();
        self.backward_seeded(grad.detach(), &mut store)?;
        Ok(store)
    }

    /// Like [`Tensor::backward`], adding into the gradients already in `store`
    /// (gradient accumulation over several micro-batches).
    pub fn backward_into(&self, store: &mut GradStore) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "backward",
                format!("needs a one-element tensor, got shape {:?}", self.shape()),
            ));
        }
        self.backward_seeded(self.ones_like()?, store)
    }

    /// Back-propagates `seed` as this tensor's gradient into `store`.
    fn backward_seeded(&self, seed: Tensor, store: &mut GradStore) -> Result<()> {
        if !self.tracks_grad() {
            return Err(Error::invalid(
                "backward",
                "the tensor does not depend on any variable that requires grad",
            ));
        }
        let _guard = no_grad();
        let order = topological_order(self);
        let mut pending = GradStore::new();
        // Gradients of narrowed views, per source tensor: (dim, start, gradient). Slices
        // that tile their source (a fused projection split into parts) are joined with one
        // concatenation instead of a zero-padded sum per slice.
        let mut slices: HashMap<TensorId, Vec<(usize, usize, Tensor)>> = HashMap::new();
        pending.accumulate(self.id(), seed)?;
        for node in order.iter().rev() {
            let dense = pending.grads.remove(&node.id());
            let grad = match slices.remove(&node.id()) {
                Some(parts) => Some(join_slices(node.shape(), dense, parts)?),
                None => dense,
            };
            let Some(grad) = grad else {
                continue;
            };
            if node.is_variable() {
                store.accumulate(node.id(), grad.clone())?;
            }
            if let Some(op) = node.op() {
                if let Op::Narrow(x, dim, start) = op {
                    if x.tracks_grad() {
                        slices.entry(x.id()).or_default().push((*dim, *start, grad));
                    }
                    continue;
                }
                for (input, g) in backward::input_grads(op, &grad)? {
                    if input.tracks_grad() {
                        pending.accumulate(input.id(), g)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A tensor's gradient from its dense part and the gradients of its narrowed slices: one
/// concatenation when the slices share a dim and do not overlap, else padded and summed.
fn join_slices(
    shape: &[usize],
    dense: Option<Tensor>,
    mut parts: Vec<(usize, usize, Tensor)>,
) -> Result<Tensor> {
    parts.sort_by_key(|p| (p.0, p.1));
    let dim = parts[0].0;
    let disjoint = parts.iter().all(|p| p.0 == dim)
        && parts
            .windows(2)
            .all(|w| w[0].1 + w[0].2.shape()[dim] <= w[1].1);
    let joined = if disjoint {
        let slices: Vec<(usize, Tensor)> = parts.into_iter().map(|(_, s, g)| (s, g)).collect();
        vec![backward::assemble_slices(shape, dim, &slices)?]
    } else {
        parts
            .into_iter()
            .map(|(d, s, g)| backward::assemble_slices(shape, d, &[(s, g)]))
            .collect::<Result<Vec<_>>>()?
    };
    let mut acc = dense;
    for g in joined {
        acc = Some(match acc {
            Some(a) => a.add(&g)?,
            None => g,
        });
    }
    acc.ok_or_else(|| Error::invalid("backward", "no gradient to join"))
}
