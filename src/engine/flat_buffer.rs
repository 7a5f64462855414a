//! The model's variables as views of one flat buffer, and their gradients as views of another.
//!
//! Why: for a model this small, a step's time is mostly the number of libtorch calls. `nn::Adam` runs ~8
//! element-wise ops per parameter tensor; over one flat tensor it runs ~8 in all, whatever the number of
//! layers. And under torchrun the gradients are averaged in one all-reduce over one buffer instead of one
//! per tensor. This is what PyTorch's DistributedDataParallel does with `gradient_as_bucket_view=True`:
//! its gradients are views into the flat buckets its all-reduce works on; here there is a single bucket,
//! which also holds the parameters so that the optimizer updates one tensor.
//!
//! [`FlatParameters`] is that layout for the autograd engine: every trainable variable of a `VarStore`
//! becomes a view of one flat parameter `[P]` (ordered by name), every `.grad` a view of one flat gradient
//! buffer `[P]` in the same slots. Autograd accumulates each layer's gradient in place into its slot
//! (libtorch adds into an existing `.grad` when one is defined), so the step zeroes the buffer before each
//! backward pass instead of calling `zero_grad`, which would drop the `.grad` tensors and with them the
//! views. Frozen tensors (fine-tuning) get `requires_grad = false` and stay outside: autograd computes no
//! gradient for them and the optimizer (AdamW's decay included) never sees them.
//!
//! [`Slots`] and [`move_into`] are the two moves both engines make: carve consecutive views out of a
//! flat buffer, and make a variable one of them. The fused engine lays out its own buffers with them
//! (every Dense tensor, frozen ones included, in layer order, as its saved optimizer state expects).

use super::saved_state::Slot;
use anyhow::{Context, Result, ensure};
use tch::{Kind, Tensor, nn};

/// Name of the flat parameter in [`FlatParameters::var_store`].
pub const FLAT_PARAMETERS: &str = "parameters";

/// Consecutive views of a flat buffer `[P]`: each [`next`](Slots::next) is a view of the following
/// elements, shaped.
pub struct Slots<'a> {
    buffer: &'a Tensor,
    offset: i64,
}

impl<'a> Slots<'a> {
    pub fn new(buffer: &'a Tensor) -> Slots<'a> {
        Slots { buffer, offset: 0 }
    }

    /// A view of the next `shape.product()` elements of the buffer, with that shape.
    pub fn next(&mut self, shape: &[i64]) -> Result<Tensor> {
        let numel: i64 = shape.iter().product();
        let slot = self.buffer.f_narrow(0, self.offset, numel)?.f_view(shape)?;
        self.offset += numel;
        Ok(slot)
    }
}

/// Copies `variable`'s values into `slot` (a view of a flat buffer, same shape) and makes `variable` a
/// view of it: from then on, writing one is writing the other. Saving, evaluating and exporting the
/// model read the flat buffer.
pub fn move_into(variable: &Tensor, slot: &Tensor) -> Result<()> {
    tch::no_grad(|| slot.shallow_clone().f_copy_(variable))?;
    variable.shallow_clone().set_data(slot);
    Ok(())
}

/// The trainable variables of a `VarStore` as views of one flat parameter, their gradients as views of
/// one flat gradient buffer (DDP's `gradient_as_bucket_view`, one bucket).
pub struct FlatParameters {
    /// Holds the flat parameter `[P]` (named [`FLAT_PARAMETERS`]): the one variable the optimizer updates.
    store: nn::VarStore,
    /// `[P]`: the gradient of every trainable variable, in the same slots.
    gradients: Tensor,
    /// Which variable sits where in the two buffers, in order.
    slots: Vec<Slot>,
}

impl FlatParameters {
    /// Freezes the variables of `vs` named in `frozen` and moves the others, sorted by name, and their
    /// gradients into flat buffers. Errors: a name in `frozen` the model does not have; nothing left to
    /// train.
    pub fn new(vs: &nn::VarStore, frozen: &[String]) -> Result<FlatParameters> {
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        for name in frozen {
            ensure!(variables.iter().any(|(n, _)| n == name), "the model has no tensor '{name}' to freeze");
        }
        let (frozen, trainable): (Vec<_>, Vec<_>) = variables.into_iter().partition(|(name, _)| frozen.contains(name));
        for (_, variable) in &frozen {
            let _ = variable.set_requires_grad(false);
        }
        let total: i64 = trainable.iter().map(|(_, v)| v.numel() as i64).sum();
        ensure!(total > 0, "nothing to train: every tensor is frozen");

        let store = nn::VarStore::new(vs.device());
        let flat = store.root().f_zeros(FLAT_PARAMETERS, &[total])?;
        let mut gradients = Self::define_gradients(&flat, &trainable)?;
        let (mut parameter_slots, mut gradient_slots) = (Slots::new(&flat), Slots::new(&gradients));
        let mut slots = Vec::with_capacity(trainable.len());
        for (name, variable) in &trainable {
            let shape = variable.size();
            let parameter = parameter_slots.next(&shape)?.detach();
            move_into(variable, &parameter).with_context(|| format!("copying {name}"))?;
            variable.grad().set_data(&gradient_slots.next(&shape)?);
            slots.push(Slot { name: name.clone(), shape, trainable: true });
        }
        let _ = gradients.f_zero_()?;
        Ok(FlatParameters { store, gradients, slots })
    }

    /// One backward pass through zero gives `flat` and every variable a `.grad` tensor; returns `flat`'s,
    /// the flat gradient buffer, whose slots the variables' `.grad` will then be pointed at.
    fn define_gradients(flat: &Tensor, trainable: &[(String, Tensor)]) -> Result<Tensor> {
        let mut touch = flat.f_sum(Kind::Float)?;
        for (_, variable) in trainable {
            touch = touch.f_add(&variable.f_sum(Kind::Float)?)?;
        }
        touch.f_mul_scalar(0.0)?.f_backward()?;
        Ok(flat.grad())
    }

    /// The store holding the flat parameter: build the optimizer over it.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.store
    }

    /// The flat parameter `[P]` itself.
    pub fn flat_parameter(&self) -> Result<Tensor> {
        let variables = self.store.variables();
        let flat = variables.get(FLAT_PARAMETERS).context("the flat parameter is missing from its store")?;
        Ok(flat.shallow_clone())
    }

    /// Where each trainable variable sits in the flat buffers, in order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// `[P]`: every trainable variable's gradient; what the all-reduce averages.
    pub fn gradients(&self) -> &Tensor {
        &self.gradients
    }

    /// Zeroes the flat gradient buffer (before each backward pass, which adds into it).
    pub fn zero_gradients(&mut self) -> Result<()> {
        let _ = self.gradients.f_zero_()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// A store with `b` `[2, 2]` = 1..4 and `a` `[3]` = 5..7, created in that order.
    fn store() -> nn::VarStore {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let b = root.zeros("b", &[2, 2]);
        let a = root.zeros("a", &[3]);
        tch::no_grad(|| {
            b.shallow_clone().copy_(&Tensor::from_slice(&[1f32, 2., 3., 4.]).view([2, 2]));
            a.shallow_clone().copy_(&Tensor::from_slice(&[5f32, 6., 7.]));
        });
        vs
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::try_from(&t.flatten(0, -1)).unwrap()
    }

    fn flat_parameter(flat: &FlatParameters) -> Tensor {
        flat.var_store().variables()[FLAT_PARAMETERS].shallow_clone()
    }

    #[test]
    fn slots_are_consecutive_shaped_views() {
        let buffer = Tensor::arange(10, (Kind::Float, Device::Cpu));
        let mut slots = Slots::new(&buffer);
        let first = slots.next(&[2, 3]).unwrap();
        let second = slots.next(&[4]).unwrap();
        assert_eq!(first.size(), [2, 3]);
        assert_eq!(values(&second), [6., 7., 8., 9.]);
        let _ = second.shallow_clone().fill_(-1.0);
        assert_eq!(values(&buffer)[6..], [-1., -1., -1., -1.]);
        assert!(slots.next(&[1]).is_err(), "past the end of the buffer");
    }

    #[test]
    fn the_flat_parameter_holds_the_variables_in_name_order() {
        let vs = store();
        let flat = FlatParameters::new(&vs, &[]).unwrap();
        assert_eq!(values(&flat_parameter(&flat)), [5., 6., 7., 1., 2., 3., 4.], "a before b");
        assert_eq!(flat.gradients().size(), [7]);
        assert_eq!(values(flat.gradients()), [0.; 7]);
    }

    #[test]
    fn variables_are_views_of_the_flat_parameter_both_ways() {
        let vs = store();
        let flat = FlatParameters::new(&vs, &[]).unwrap();
        let parameter = flat_parameter(&flat);
        let variables = vs.variables();
        let _ = tch::no_grad(|| parameter.shallow_clone().narrow(0, 3, 4).fill_(9.0));
        assert_eq!(values(&variables["b"]), [9.; 4], "writing the flat buffer changes the variable");
        let _ = tch::no_grad(|| variables["a"].shallow_clone().fill_(-2.0));
        assert_eq!(values(&parameter)[..3], [-2.; 3], "writing the variable changes the flat buffer");
        assert_eq!(variables["b"].size(), [2, 2], "the variable keeps its shape");
    }

    #[test]
    fn backward_accumulates_into_the_flat_gradient_buffer() {
        let vs = store();
        let mut flat = FlatParameters::new(&vs, &[]).unwrap();
        let variables = vs.variables();
        // d/da Σ a² = 2a; d/db Σ 3b = 3.
        let loss = || variables["a"].square().sum(Kind::Float) + variables["b"].sum(Kind::Float) * 3.0;
        loss().backward();
        assert_eq!(values(flat.gradients()), [10., 12., 14., 3., 3., 3., 3.]);
        assert_eq!(values(&variables["a"].grad()), [10., 12., 14.], ".grad is a view of the buffer");
        loss().backward();
        assert_eq!(values(flat.gradients()), [20., 24., 28., 6., 6., 6., 6.], "autograd adds into it");
        flat.zero_gradients().unwrap();
        assert_eq!(values(&variables["b"].grad()), [0.; 4], "zeroing the buffer zeroes every .grad");
    }

    #[test]
    fn frozen_tensors_are_outside_and_get_no_gradient() {
        let vs = store();
        let flat = FlatParameters::new(&vs, &["b".to_string()]).unwrap();
        assert_eq!(values(&flat_parameter(&flat)), [5., 6., 7.]);
        let variables = vs.variables();
        assert!(!variables["b"].requires_grad());
        (variables["a"].sum(Kind::Float) + variables["b"].sum(Kind::Float)).backward();
        assert_eq!(values(flat.gradients()), [1., 1., 1.]);
        assert!(!variables["b"].grad().defined(), "no gradient for a frozen tensor");
        assert_eq!(values(&variables["b"]), [1., 2., 3., 4.]);
    }

    #[test]
    fn refusals_name_the_problem() {
        let vs = store();
        let missing = FlatParameters::new(&vs, &["c".to_string()]).err().unwrap().to_string();
        assert_eq!(missing, "the model has no tensor 'c' to freeze");
        let all = FlatParameters::new(&vs, &["a".to_string(), "b".to_string()]).err().unwrap().to_string();
        assert_eq!(all, "nothing to train: every tensor is frozen");
    }
}
