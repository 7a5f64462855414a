//! The library's named values as clap arguments: `--arch`, `--engine`, `--precision`, `--monitor`,
//! `--fit` and `--invert`. The library spells and describes them (`NAMES`, `HELP`, `FromStr`, `Display`:
//! `crate::spelling`); this module hands clap each name with its description for `--help` and lets clap
//! refuse any other text with its usual message, the names listed.

use crate::callbacks::Monitor;
use crate::distributed::BackendChoice;
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
    Named::described(Arch::NAMES, Arch::HELP)
}

/// `--engine`.
pub fn engine() -> Named<Engine> {
    Named::described(Engine::NAMES, Engine::HELP)
}

/// `--dist-backend`.
pub fn dist_backend() -> Named<BackendChoice> {
    Named::described(BackendChoice::NAMES, BackendChoice::HELP)
}

/// `--precision`.
pub fn precision() -> Named<Precision> {
    Named::described(Precision::NAMES, Precision::HELP)
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
    Named::described(Framing::NAMES, Framing::HELP)
}

/// `--invert`.
pub fn invert() -> Named<Invert> {
    Named::described(Invert::NAMES, Invert::HELP)
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

    /// Every name of `T` offered with its description from `T::HELP`.
    fn describes_every_name<T, const N: usize>(parser: Named<T>, help: [&str; N])
    where
        T: FromStr<Err = String> + Clone + Send + Sync + 'static,
    {
        let shown: Vec<String> =
            parser.possible_values().unwrap().map(|value| value.get_help().unwrap().to_string()).collect();
        assert_eq!(shown, help);
    }

    #[test]
    fn each_described_flag_shows_the_librarys_descriptions() {
        describes_every_name(arch(), Arch::HELP);
        describes_every_name(engine(), Engine::HELP);
        describes_every_name(precision(), Precision::HELP);
        describes_every_name(fit(), Framing::HELP);
        describes_every_name(invert(), Invert::HELP);
    }

    #[test]
    fn kerass_monitor_spellings_are_read_as_the_listed_names() {
        for (name, keras) in Monitor::NAMES.into_iter().zip(KERAS_MONITORS) {
            assert_eq!(keras.parse::<Monitor>(), name.parse::<Monitor>());
        }
    }
}
