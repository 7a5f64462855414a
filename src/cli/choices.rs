//! The library's named values as clap arguments: `--arch`, `--engine`, `--precision`, `--monitor`,
//! `--fit` and `--invert`. The library spells them (`NAMES`, `FromStr`, `Display`: `crate::spelling`);
//! this module adds what only `--help` shows, each value's description, and lets clap refuse any other
//! text with its usual message, the names listed.

use crate::callbacks::Monitor;
use crate::engine::{Engine, Precision};
use crate::model::Arch;
use crate::preprocess::{Framing, Invert};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;
use std::ffi::OsStr;
use std::marker::PhantomData;
use std::str::FromStr;

/// A clap value parser for `T` that offers `T`'s names (with their help and aliases).
#[derive(Clone)]
pub struct Named<T> {
    values: PossibleValuesParser,
    value: PhantomData<fn() -> T>,
}

impl<T> Named<T> {
    fn new(values: impl IntoIterator<Item = PossibleValue>) -> Named<T> {
        Named { values: PossibleValuesParser::new(values), value: PhantomData }
    }

    /// `names`, each with its line of `help`, in that order.
    fn described<const N: usize>(names: [&'static str; N], help: [&'static str; N]) -> Named<T> {
        Named::new(names.into_iter().zip(help).map(|(name, help)| PossibleValue::new(name).help(help)))
    }
}

impl<T: FromStr<Err = String> + Clone + Send + Sync + 'static> TypedValueParser for Named<T> {
    type Value = T;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<T, clap::Error> {
        // A value that is not UTF-8 is refused like an unknown name, shown lossily.
        let value = value.to_string_lossy();
        let name = self.values.parse_ref(cmd, arg, OsStr::new(value.as_ref()))?;
        name.parse().map_err(|err| clap::Error::raw(ErrorKind::InvalidValue, format!("{err}\n")).with_cmd(cmd))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        self.values.possible_values()
    }
}

/// `--arch`.
pub fn arch() -> Named<Arch> {
    Named::described(
        Arch::NAMES,
        [
            "Flatten → Dense(hidden, relu)... → Dense(classes): the Keras tutorial's model (--hidden 128)",
            "Flatten → Dense(classes): softmax regression, the tutorial's y = Wx + b alone",
            "Keras's \"Simple MNIST convnet\": Conv2D(32, 3x3, relu) → MaxPool(2) → Conv2D(64, 3x3, relu) → \
             MaxPool(2) → Flatten → Dropout(0.5) → Dense(classes)",
        ],
    )
}

/// `--engine`.
pub fn engine() -> Named<Engine> {
    Named::described(
        Engine::NAMES,
        [
            "libtorch's autograd and tch's nn::Adam, on any architecture (the default, as tch's MNIST example \
             trains)",
            "The MLP's backward pass written out and Adam over one flat buffer: fewer libtorch calls per step; MLP \
             and linear models only",
        ],
    )
}

/// `--precision`.
pub fn precision() -> Named<Precision> {
    Named::described(
        Precision::NAMES,
        [
            "float32 throughout (the Keras tutorial)",
            "bfloat16 matrix products and activations; master weights, loss, gradients and Adam in float32 (mixed \
             precision, as torch.autocast does). Fused engine only",
        ],
    )
}

/// Keras's spellings of the monitored metrics, in [`Monitor::NAMES`]' order: accepted, not listed.
const KERAS_MONITORS: [&str; Monitor::NAMES.len()] = ["val_loss", "val_accuracy"];

/// `--monitor`: its names listed, Keras's spellings accepted too.
pub fn monitor() -> Named<Monitor> {
    Named::new(
        Monitor::NAMES.into_iter().zip(KERAS_MONITORS).map(|(name, keras)| PossibleValue::new(name).alias(keras)),
    )
}

/// `--fit`.
pub fn fit() -> Named<Framing> {
    Named::described(
        Framing::NAMES,
        [
            "As it is when the picture already has the data set's layout (the model's size on a dark background; \
             for digits a wholly dark border and the content centred); otherwise fashion for a Fashion-MNIST \
             model, else digits",
            "Crop to the content, scale it into a 20x20 box, centre it by centre of mass (as digit MNIST was made)",
            "Crop to the content, scale its longer side to the frame, centre it (as Fashion-MNIST was made)",
            "The pixels as they are: only grayscale, --invert and a resize when the size differs",
        ],
    )
}

/// `--invert`.
pub fn invert() -> Named<Invert> {
    Named::described(
        Invert::NAMES,
        [
            "Invert when the picture's border is mostly light (a dark drawing on paper)",
            "Always invert: dark ink on a light background becomes light on dark",
            "Never invert: the picture is already light on dark, as MNIST",
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name of `T` offered, in order, each read back and printed as itself.
    fn offers_every_name<T, const N: usize>(parser: Named<T>, names: [&str; N])
    where
        T: FromStr<Err = String> + std::fmt::Display + Clone + Send + Sync + 'static,
    {
        let offered: Vec<String> =
            parser.possible_values().unwrap().map(|value| value.get_name().to_string()).collect();
        assert_eq!(offered, names);
        for name in names {
            assert_eq!(name.parse::<T>().unwrap().to_string(), name);
        }
    }

    #[test]
    fn each_flag_offers_the_librarys_names() {
        offers_every_name(arch(), Arch::NAMES);
        offers_every_name(engine(), Engine::NAMES);
        offers_every_name(precision(), Precision::NAMES);
        offers_every_name(monitor(), Monitor::NAMES);
        offers_every_name(fit(), Framing::NAMES);
        offers_every_name(invert(), Invert::NAMES);
    }

    #[test]
    fn kerass_monitor_spellings_are_read_as_the_listed_names() {
        for (name, keras) in Monitor::NAMES.into_iter().zip(KERAS_MONITORS) {
            assert_eq!(keras.parse::<Monitor>(), name.parse::<Monitor>());
        }
    }
}
