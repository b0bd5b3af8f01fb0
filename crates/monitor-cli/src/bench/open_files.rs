//! The open files a run needs: one descriptor per connection, which 10,000 subscribers
//! take past many shells' `ulimit -n`.

use super::config::BenchConfig;
use crate::error::{Error, Result};

/// File descriptors a run needs beyond one per connection (the runtime, stdio, logging),
/// as a margin.
const SPARE_FDS: u64 = 64;

/// Open files a run of `cfg` needs: one per connection, and a margin.
fn fds_needed(cfg: &BenchConfig) -> u64 {
    (cfg.subscribers as u64)
        .saturating_add(cfg.reporters as u64)
        .saturating_add(SPARE_FDS)
}

/// Raises this process's soft limit on open files (`ulimit -n`) to what a run of `cfg`
/// needs, as far as the hard limit allows (the `monitor-client bench` command does this
/// before a run; a program that embeds the bench decides for itself). Returns the soft
/// limit now in force, `None` for unlimited.
///
/// # Errors
/// The system's refusal to change the limit.
#[cfg(unix)]
pub fn raise_open_files_limit(cfg: &BenchConfig) -> std::io::Result<Option<u64>> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let needed = fds_needed(cfg);
    match limit.current {
        Some(soft) if soft < needed => {
            let raised = limit.maximum.map_or(needed, |hard| needed.min(hard));
            if raised > soft {
                let mut new = limit;
                new.current = Some(raised);
                setrlimit(Resource::Nofile, new)?;
            }
            Ok(Some(raised.max(soft)))
        }
        current => Ok(current),
    }
}

/// Refuses, before any connection is made, a run that would run out of file descriptors
/// part way through setting up its subscribers.
#[cfg(unix)]
pub(super) fn check_open_files(cfg: &BenchConfig) -> Result<()> {
    use rustix::process::{getrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let needed = fds_needed(cfg);
    match limit.current {
        Some(soft) if soft < needed => Err(Error::Bench {
            reason: format!(
                "{} subscribers and {} reporters need about {needed} open files, but this \
                 process may open {soft} (ulimit -n; hard limit {}); raise it, e.g. \
                 `ulimit -n {needed}`",
                cfg.subscribers,
                cfg.reporters,
                limit
                    .maximum
                    .map_or_else(|| "unlimited".to_owned(), |h| h.to_string()),
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(not(unix))]
pub(super) fn check_open_files(_: &BenchConfig) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::bench::config::MAX_CONNECTIONS;

    /// 10,000 subscribers are over many shells' `ulimit -n`: a run that cannot open its
    /// connections is refused before the first one, saying what to raise.
    #[cfg(unix)]
    #[test]
    fn too_few_open_files_is_refused_up_front() {
        use rustix::process::{getrlimit, Resource};
        let mut cfg = BenchConfig::new("127.0.0.1:1".parse().unwrap());
        cfg.subscribers = MAX_CONNECTIONS;
        match getrlimit(Resource::Nofile).current {
            Some(soft) if soft < fds_needed(&cfg) => {
                let err = check_open_files(&cfg).unwrap_err().to_string();
                assert!(
                    err.contains(
                        "1000000 subscribers and 1 reporters need about 1000065 open files"
                    ),
                    "{err}"
                );
                assert!(
                    err.contains(&format!("may open {soft} (ulimit -n")),
                    "{err}"
                );
            }
            _ => check_open_files(&cfg).unwrap(),
        }
        cfg.subscribers = 1;
        check_open_files(&cfg).unwrap();
    }
}
