//! Errors in plain words: the reason of an I/O error without Rust's `(os error N)` suffix, and libtorch's
//! messages without their C++ backtraces. Every module that reports a file or a tensor op uses these, so
//! they live apart from any one file format. [`UsageError`] marks the errors that are the command line's
//! (flags that do not apply together), wherever they are found, so the binary exits 2 for them.

/// An I/O error's reason in plain words, without Rust's `(os error N)` suffix.
pub fn io_reason(err: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::NotFound => "no such file or directory".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::ReadOnlyFilesystem => "read-only file system".into(),
        ErrorKind::NotADirectory => "a part of the path is a file, not a directory".into(),
        ErrorKind::IsADirectory => "it is a directory".into(),
        ErrorKind::StorageFull => "no space left on the device".into(),
        ErrorKind::AlreadyExists => "it already exists".into(),
        _ => {
            let text = err.to_string();
            match text.find(" (os error") {
                Some(end) => text[..end].to_lowercase(),
                None => text,
            }
        }
    }
}

/// libtorch error messages carry C++ backtraces; the first line is the message.
pub fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

/// A tch error as an anyhow error holding only its first line (no C++ backtrace).
pub fn torch_error(err: tch::TchError) -> anyhow::Error {
    anyhow::anyhow!("{}", first_line(&err.to_string()))
}

/// A tch error from writing a file, an I/O failure (a full disk, a file-size limit) in plain words:
/// safetensors reports those as Rust debug dumps (`IoError(Os { code: 28, .. })`).
pub fn torch_write_error(err: tch::TchError) -> anyhow::Error {
    match err {
        tch::TchError::Io(io)
        | tch::TchError::SafeTensorError { err: safetensors::SafeTensorError::IoError(io), .. } => {
            anyhow::anyhow!("{}", io_reason(&io))
        }
        other => torch_error(other),
    }
}

/// The error and its context chain on one line (`{:#}`), cut to the first line of each part:
/// libtorch appends multi-line C++ backtraces to its messages.
pub fn one_line(err: &anyhow::Error) -> String {
    err.chain().map(|cause| first_line(&cause.to_string()).to_string()).collect::<Vec<_>>().join(": ")
}

/// A command line that parsed but asks for something that cannot be done (flags that do not apply
/// together): one line on stderr, exit code 2 like the parser's own errors, and no usage line that
/// would echo the user's flags back as if they were the syntax.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
