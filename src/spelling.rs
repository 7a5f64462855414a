//! How the library's choices are spelled on the command line (and in the server's query strings),
//! without the command-line parser: clap lives in `cli/` alone, which wraps these for `--help`.
//!
//! - [`named_values!`]: an enum of named values (`--arch mlp`, `--engine fused`) gets its `NAMES`, its
//!   reading (`FromStr`, with an error naming the accepted values), its name (`Display`) and, where its
//!   values are described, their descriptions (`HELP`).
//! - [`keyword_or_list!`]: a spec that is one of a few keywords or else a comma-separated list of names
//!   (`--class-names auto` or `--class-names cat,dog`, `--freeze hidden` or `--freeze 1,3.weight`) gets
//!   its reading (`FromStr`) and its spelling (`Display`), the one the other reads back.

/// `NAMES`, `FromStr` and `Display` for an enum of unit variants, each spelled by a name (and maybe
/// read under other spellings too): `named_values!(Type, "what it is", { Variant => "name" | "alias",
/// ... })`. `NAMES` lists the names in the order given; the aliases are read but never printed.
///
/// Given each value's description too, `Variant => "name" | "alias": "what this value does"`, it also
/// gives `HELP`, the descriptions in `NAMES`' order: the one place a value is described, both for the
/// reader of the enum and for `--help`, which shows each beside its name. All values are described or
/// none.
macro_rules! named_values {
    (
        $type:ident, $what:literal,
        { $($variant:ident => $name:literal $(| $alias:literal)*: $help:literal),+ $(,)? }
    ) => {
        impl $type {
            /// What each value does, one line per value in `NAMES`' order, as `--help` shows it.
            pub const HELP: [&'static str; [$($name),+].len()] = [$($help),+];
        }

        $crate::spelling::named_values!($type, $what, { $($variant => $name $(| $alias)*),+ });
    };
    ($type:ident, $what:literal, { $($variant:ident => $name:literal $(| $alias:literal)*),+ $(,)? }) => {
        impl $type {
            /// The names this is spelled with, one per value, in the order `--help` lists them.
            pub const NAMES: [&'static str; [$($name),+].len()] = [$($name),+];
        }

        impl std::str::FromStr for $type {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name $(| $alias)* => Ok($type::$variant),)+
                    _ => Err($crate::spelling::unknown_name($what, s, &Self::NAMES)),
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $($type::$variant => $name,)+
                })
            }
        }
    };
}
pub(crate) use named_values;

/// The error of [`named_values!`]'s `FromStr`: "unknown engine 'x': expected autograd or fused".
pub fn unknown_name(what: &str, value: &str, names: &[&str]) -> String {
    let expected = match names {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    };
    format!("unknown {what} '{value}': expected {expected}")
}

/// `FromStr` and `Display` for an enum of unit variants spelled by keyword and one variant holding a
/// list of names: `keyword_or_list!(Type { "keyword" => Variant, ... } else List)`. Any other text is
/// the list, split at commas, each name trimmed; reading never fails (whether a list fits is known only
/// later). The list is spelled joined by commas.
macro_rules! keyword_or_list {
    ($type:ident { $($keyword:literal => $variant:ident),+ $(,)? } else $list:ident) => {
        impl std::str::FromStr for $type {
            type Err = std::convert::Infallible;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(match s {
                    $($keyword => $type::$variant,)+
                    list => $type::$list(list.split(',').map(|name| name.trim().to_string()).collect()),
                })
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $($type::$variant => f.write_str($keyword),)+
                    $type::$list(names) => f.write_str(&names.join(",")),
                }
            }
        }
    };
}
pub(crate) use keyword_or_list;

#[cfg(test)]
mod tests {
    use super::unknown_name;

    #[test]
    fn an_unknown_name_is_told_with_the_names_it_could_be() {
        assert_eq!(
            unknown_name("engine", "x", &["autograd", "fused"]),
            "unknown engine 'x': expected autograd or fused"
        );
        assert_eq!(
            unknown_name("architecture", "rnn", &["mlp", "linear", "cnn"]),
            "unknown architecture 'rnn': expected mlp, linear or cnn"
        );
    }
}
