//! Usage errors that name the flag the user typed: a configuration error of the library
//! or of the bench names a config field (`heartbeat_interval`), told here as the flag
//! that sets it (`--heartbeat`).

use monitor_client::{ClientConfig, Error as ClientError};

use crate::error::Error;

/// The flag that sets each [`ClientConfig`] field, so that a usage error names what the
/// user typed rather than the library's field.
pub(super) const CONN_FLAGS: &[(&str, &str)] = &[
    ("server", "--server"),
    ("uuid", "--uuid"),
    ("heartbeat_interval", "--heartbeat"),
    ("connect_timeout", "--connect-timeout"),
    ("ack_timeout", "--ack-timeout"),
    ("max_attempts", "--retries"),
];

/// The flag that sets each TLS and token field of the library's config ([`SecurityArgs`](super::SecurityArgs)),
/// for every command.
const SECURITY_FLAGS: &[(&str, &str)] = &[
    ("tls", "--tls"),
    ("tls.ca_files", "--ca"),
    ("tls.cert_file", "--cert"),
    ("tls.key_file", "--key"),
    ("tls.server_name", "--server-name"),
    ("token", "--token"),
];

/// The flag that sets each [`BenchConfig`](crate::bench::BenchConfig) field.
pub(super) const BENCH_FLAGS: &[(&str, &str)] = &[
    ("server", "--server"),
    ("subscribers", "--subscribers"),
    ("reporters", "--reporters"),
    ("size", "--size"),
    ("duration", "--duration"),
    ("rate", "--rate"),
    ("window", "--window"),
    ("warmup", "--warmup"),
    ("settle", "--settle"),
    ("drain", "--drain"),
    ("max_frame_len", "--max-frame-len"),
    ("ws", "--ws"),
];

/// A configuration error as a usage message: `--flag: reason` when a flag sets the field at
/// fault, the error as it is otherwise. Other fields the reason names (`max_frame_len`)
/// become their flags too; only names with an underscore, so that plain words in the
/// reason ("the server's") are left alone.
pub(super) fn flag_error(e: &Error, flags: &[(&str, &str)]) -> String {
    let Some((field, reason)) = e.config_field() else {
        return e.to_string();
    };
    let Some((_, flag)) = flags
        .iter()
        .chain(SECURITY_FLAGS)
        .find(|(f, _)| *f == field)
    else {
        return e.to_string();
    };
    let mut reason = reason.to_owned();
    for (name, other) in flags.iter().filter(|(f, _)| f.contains('_')) {
        reason = replace_word(&reason, name, other);
    }
    format!("{flag}: {reason}")
}

/// `text` with each whole-word `word` (not inside a longer identifier) replaced by `with`.
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let (before, after) = (&rest[..at], &rest[at + word.len()..]);
        let whole = !before.ends_with(is_ident) && !after.starts_with(is_ident);
        out.push_str(before);
        out.push_str(if whole { with } else { word });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// A client config's TLS files read (as the client will read them when it starts), so
/// that a missing or unusable file is a usage error naming its flag:
/// `--ca /x.pem: no such file`.
pub(super) fn check_tls_files(config: &ClientConfig, flags: &[(&str, &str)]) -> Result<(), String> {
    config
        .check_tls_files()
        .map_err(|e| client_flag_error(e, flags))
}

/// A library error as a usage message naming the flag at fault: a TLS file's error as
/// `--ca FILE: reason`, a configuration error as `--flag: reason`.
fn client_flag_error(e: ClientError, flags: &[(&str, &str)]) -> String {
    if let ClientError::TlsFile { what, path, reason } = &e {
        let flag = SECURITY_FLAGS
            .iter()
            .find(|(field, _)| *field == what.field())
            .map_or("", |(_, flag)| *flag);
        return format!("{flag} {}: {reason}", path.display());
    }
    flag_error(&e.into(), flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_replace_field_names() {
        let e = Error::Config {
            field: "size",
            reason: "over max_frame_len (10), see max_frame_len_x and the server's size".into(),
        };
        assert_eq!(
            flag_error(&e, BENCH_FLAGS),
            "--size: over --max-frame-len (10), see max_frame_len_x and the server's size"
        );
        assert_eq!(replace_word("a_b a_b.", "a_b", "X"), "X X.");
    }
}
