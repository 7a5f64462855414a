//! How a flag's value is spelled, for specs that are one of a few keywords or else a comma-separated
//! list of names (`--class-names auto` or `--class-names cat,dog`, `--freeze hidden` or `--freeze
//! 1,3.weight`): [`keyword_or_list!`] gives such a type its reading (`FromStr`) and its spelling
//! (`Display`), the one the other reads back, so every such flag reads and prints alike.

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
