//! `--class-names`: which names a run stores for its classes. The command line gives a keyword or a
//! list; the names themselves depend on the data (its path, its number of classes), so the spec is
//! parsed once by clap into [`ClassNames`] and turned into names only when the data is known.

use anyhow::{Result, ensure};
use std::path::Path;

/// Class names of Fashion-MNIST, in label order.
pub const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Where a run's class names come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClassNames {
    /// Fashion-MNIST's names when the data set's path says "fashion" (and it has 10 classes), else the
    /// digits.
    #[default]
    Auto,
    /// "0", "1", ... one per class.
    Digits,
    /// Fashion-MNIST's ten names.
    Fashion,
    /// One name per class, in label order (a resumed run's names come back this way from config.json).
    Listed(Vec<String>),
}

impl ClassNames {
    /// The names of `num_classes` classes of the data set at `path`; a list of another length is refused.
    pub fn names(&self, path: &Path, num_classes: usize) -> Result<Vec<String>> {
        let numbered = || (0..num_classes).map(|i| i.to_string()).collect::<Vec<_>>();
        let fashion = || FASHION_CLASSES.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let names = match self {
            ClassNames::Auto => {
                if looks_fashion(path) && num_classes == FASHION_CLASSES.len() {
                    fashion()
                } else {
                    numbered()
                }
            }
            ClassNames::Digits => numbered(),
            ClassNames::Fashion => fashion(),
            ClassNames::Listed(names) => names.clone(),
        };
        ensure!(names.len() == num_classes, "--class-names gives {} names for {num_classes} classes", names.len());
        Ok(names)
    }
}

/// Whether the data set's path (resolved, so a link named `mnist` to Fashion-MNIST counts) says "fashion".
fn looks_fashion(path: &Path) -> bool {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .to_lowercase()
        .contains("fashion")
}

// `auto`, `digits` or `fashion`, else a comma-separated list whose names are trimmed. Every text is a
// valid spec: whether a list fits is known only with the data ([`ClassNames::names`]).
crate::spelling::keyword_or_list!(ClassNames { "auto" => Auto, "digits" => Digits, "fashion" => Fashion } else Listed);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ClassNames {
        let Ok(spec) = s.parse();
        spec
    }

    fn listed(names: &[&str]) -> ClassNames {
        ClassNames::Listed(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn keywords_and_lists_parse() {
        assert_eq!(parse("auto"), ClassNames::Auto);
        assert_eq!(parse("digits"), ClassNames::Digits);
        assert_eq!(parse("fashion"), ClassNames::Fashion);
        assert_eq!(parse("a, b ,c"), listed(&["a", "b", "c"]));
        // Keywords are matched exactly, as before: anything else is a list.
        assert_eq!(parse("Auto"), listed(&["Auto"]));
        assert_eq!(parse(" digits"), listed(&["digits"]));
        assert_eq!(parse("north,east,south,west"), listed(&["north", "east", "south", "west"]));
    }

    #[test]
    fn display_is_the_command_line_spelling() {
        for spec in ["auto", "digits", "fashion", "a,b", "T-shirt/top,Trouser"] {
            assert_eq!(parse(spec).to_string(), spec);
        }
        assert_eq!(parse("a, b").to_string(), "a,b");
        assert_eq!(ClassNames::default(), ClassNames::Auto);
    }

    #[test]
    fn names_follow_the_spec() {
        let fashion_dir = Path::new("/nonexistent/fashion-mnist");
        assert_eq!(ClassNames::Auto.names(fashion_dir, 10).unwrap()[9], "Ankle boot");
        assert_eq!(ClassNames::Auto.names(fashion_dir, 4).unwrap(), vec!["0", "1", "2", "3"]);
        assert_eq!(ClassNames::Auto.names(Path::new("/x/mnist"), 10).unwrap()[3], "3");
        assert_eq!(ClassNames::Digits.names(fashion_dir, 3).unwrap(), vec!["0", "1", "2"]);
        assert_eq!(ClassNames::Fashion.names(Path::new("/x/mnist"), 10).unwrap()[0], "T-shirt/top");
        assert_eq!(parse("a, b").names(fashion_dir, 2).unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn a_list_of_the_wrong_length_is_refused() {
        let err = parse("a,b,c").names(Path::new("/x"), 2).unwrap_err().to_string();
        assert_eq!(err, "--class-names gives 3 names for 2 classes");
        let err = ClassNames::Fashion.names(Path::new("/x"), 4).unwrap_err().to_string();
        assert_eq!(err, "--class-names gives 10 names for 4 classes");
    }
}
