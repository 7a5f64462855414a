//! Adam's state as a checkpoint (`optimizer.safetensors`) holds it, the same for both engines: for each
//! trainable tensor of the model, under its name, the three entries PyTorch's
//! `optimizer.state_dict()["state"][i]` has for `torch.optim.Adam` — `{name}.step` (a float32 scalar, as
//! PyTorch keeps it), `{name}.exp_avg` and `{name}.exp_avg_sq` (the tensor's shape). Python loads it into
//! `torch.optim.Adam` by putting each name's three entries at that parameter's index.
//!
//! Both engines keep their moments in flat buffers; [`Slot`]s say which tensor sits where in them.

use anyhow::{Context, Result, bail, ensure};
use tch::{Device, Kind, Tensor};

/// One tensor's place in a flat buffer: the next `shape.product()` elements.
pub struct Slot {
    pub name: String,
    pub shape: Vec<i64>,
    /// A frozen tensor's slot (the fused engine keeps them in its buffers) has no state of its own.
    pub trainable: bool,
}

/// The optimizer state of a flat buffer: the steps taken and the moments `[P]`.
pub struct FlatState {
    pub step: i64,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

fn numel(shape: &[i64]) -> i64 {
    shape.iter().product()
}

/// The named entries of `state`, one triple per trainable slot (views of its buffers).
pub fn to_named(slots: &[Slot], state: &FlatState) -> Result<Vec<(String, Tensor)>> {
    let step = Tensor::from_slice(&[state.step as f32]).f_view([0i64; 0].as_slice())?;
    let mut named = Vec::with_capacity(3 * slots.len());
    let mut offset = 0;
    for slot in slots {
        let size = numel(&slot.shape);
        if slot.trainable {
            let part = |flat: &Tensor| flat.f_narrow(0, offset, size)?.f_view(slot.shape.as_slice());
            named.push((format!("{}.step", slot.name), step.copy()));
            named.push((format!("{}.exp_avg", slot.name), part(&state.exp_avg)?));
            named.push((format!("{}.exp_avg_sq", slot.name), part(&state.exp_avg_sq)?));
        }
        offset += size;
    }
    Ok(named)
}

/// The flat state (on the CPU) that `named` holds for `slots`: `None` when it holds none of them (a
/// state of another layout); frozen slots get zeros. A state with some tensors but not others, of
/// other shapes, or with steps that disagree is an error naming the tensor.
pub fn from_named(slots: &[Slot], named: &[(String, Tensor)]) -> Result<Option<FlatState>> {
    let get = |name: &str| named.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    if !slots.iter().any(|slot| slot.trainable && get(&format!("{}.exp_avg", slot.name)).is_some()) {
        return Ok(None);
    }
    let (mut first, mut second, mut step) = (Vec::new(), Vec::new(), None);
    for slot in slots {
        if !slot.trainable {
            let zeros = Tensor::zeros([numel(&slot.shape)], (Kind::Float, Device::Cpu));
            first.push(zeros.copy());
            second.push(zeros);
            continue;
        }
        let entry = |what: &str| {
            let name = format!("{}.{what}", slot.name);
            get(&name).with_context(|| format!("the optimizer state has no '{name}'"))
        };
        for (what, flat) in [("exp_avg", &mut first), ("exp_avg_sq", &mut second)] {
            let tensor = entry(what)?;
            ensure!(
                tensor.size() == slot.shape,
                "the optimizer state's '{}.{what}' has shape {:?}, the model's tensor {:?}",
                slot.name,
                tensor.size(),
                slot.shape
            );
            flat.push(tensor.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?);
        }
        let this = entry("step")?.f_double_value(&[])?.round() as i64;
        match step {
            Some(step) if step != this => bail!("the optimizer state's steps disagree: {step} and {this}"),
            _ => step = Some(this),
        }
    }
    let step = step.unwrap_or(0);
    ensure!(step >= 0, "the optimizer state has a negative step count");
    Ok(Some(FlatState { step, exp_avg: Tensor::f_cat(&first, 0)?, exp_avg_sq: Tensor::f_cat(&second, 0)? }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Vec<Slot> {
        vec![
            Slot { name: "a".into(), shape: vec![2], trainable: true },
            Slot { name: "frozen".into(), shape: vec![1], trainable: false },
            Slot { name: "b".into(), shape: vec![1, 2], trainable: true },
        ]
    }

    #[test]
    fn names_round_trip_and_frozen_slots_come_back_zero() {
        let state = FlatState {
            step: 7,
            exp_avg: Tensor::from_slice(&[1f32, 2., 3., 4., 5.]),
            exp_avg_sq: Tensor::from_slice(&[6f32, 7., 8., 9., 10.]),
        };
        let named = to_named(&slots(), &state).unwrap();
        let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.step", "a.exp_avg", "a.exp_avg_sq", "b.step", "b.exp_avg", "b.exp_avg_sq"]);
        assert_eq!(named[0].1.size(), Vec::<i64>::new(), "step is a scalar, as in PyTorch");
        assert_eq!(named[4].1.size(), [1, 2]);
        let back = from_named(&slots(), &named).unwrap().unwrap();
        assert_eq!(back.step, 7);
        assert_eq!(Vec::<f32>::try_from(&back.exp_avg).unwrap(), [1., 2., 0., 4., 5.]);
        assert_eq!(Vec::<f32>::try_from(&back.exp_avg_sq).unwrap(), [6., 7., 0., 9., 10.]);
    }

    #[test]
    fn other_layouts_are_none_and_broken_states_errors() {
        let flat = vec![("exp_avg".to_string(), Tensor::zeros([5], (Kind::Float, Device::Cpu)))];
        assert!(from_named(&slots(), &flat).unwrap().is_none());
        let state = FlatState {
            step: 1,
            exp_avg: Tensor::ones([5], (Kind::Float, Device::Cpu)),
            exp_avg_sq: Tensor::ones([5], (Kind::Float, Device::Cpu)),
        };
        let mut named = to_named(&slots(), &state).unwrap();
        named.retain(|(n, _)| n != "b.exp_avg_sq");
        let missing = from_named(&slots(), &named).err().unwrap().to_string();
        assert_eq!(missing, "the optimizer state has no 'b.exp_avg_sq'");
        named.push(("b.exp_avg_sq".into(), Tensor::ones([2], (Kind::Float, Device::Cpu))));
        let shape = from_named(&slots(), &named).err().unwrap().to_string();
        assert_eq!(shape, "the optimizer state's 'b.exp_avg_sq' has shape [2], the model's tensor [1, 2]");
    }
}
