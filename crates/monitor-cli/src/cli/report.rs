//! `monitor-client report --body`: one report, read from the command line, stdin or a
//! file, sent, and its acknowledgement printed.

use std::io::Read;

use monitor_client::Reporter;
use monitor_proto::HEADER_LEN;

use super::args::ReportArgs;
use super::exit::{failure, print_line, usage, EXIT_OK};

pub(super) async fn report_once(args: ReportArgs, body: String) -> u8 {
    let config = match args.conn.config(Some(5)) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    let limit = (config.max_report_frame_len as usize).saturating_sub(HEADER_LEN);
    let (what, body) = match read_body(body, limit).await {
        Ok(read) => read,
        Err(e) => return usage(&e),
    };
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) if v.is_object() => {}
        Ok(_) => {
            return usage(&format!(
                "{what} must be a JSON object, e.g. '{{\"code\":\"deploy\",\"version\":\"1.2\"}}'"
            ))
        }
        Err(e) => return usage(&format!("{what} is not valid JSON: {e}")),
    }
    let reporter = match Reporter::connect(config).await {
        Ok(r) => r,
        Err(e) => return failure(&e),
    };
    match reporter.report_acknowledged(body).await {
        Ok(ack) => {
            // `{"delivered":N}`, and `"cluster":true` from a clustered server.
            print_line(&serde_json::to_string(&ack).unwrap_or_default());
            EXIT_OK
        }
        Err(e) => failure(&e),
    }
}

/// The report `--body` gives: the text itself, `-` for stdin or `@FILE` for a file, at
/// most `limit` bytes, read without holding more than `limit + 1` bytes whatever the
/// source's size. Returns how to name the source in a message, and the report, trimmed of
/// surrounding whitespace (a file's final newline).
///
/// # Errors
/// A message naming the source: unreadable, over `limit`, or not UTF-8.
async fn read_body(arg: String, limit: usize) -> Result<(String, String), String> {
    let (what, path) = if arg == "-" {
        ("--body - (stdin)".to_owned(), None)
    } else if let Some(path) = arg.strip_prefix('@') {
        if path.is_empty() {
            return Err("--body @: a file name must follow the @".into());
        }
        (
            format!("--body @{path}"),
            Some(std::path::PathBuf::from(path)),
        )
    } else {
        return Ok(("--body".into(), arg));
    };
    let source = match &path {
        Some(path) => path.display().to_string(),
        None => "stdin".into(),
    };
    let too_large = |len: Option<u64>| {
        let has = len.map_or("more than the".into(), |len| {
            format!("{len} bytes, over the")
        });
        format!(
            "{what}: {source} has {has} report limit of {limit} bytes \
             (max_report_frame_len less the {HEADER_LEN}-byte header)"
        )
    };
    // Blocking reads, on a thread of their own.
    let read = tokio::task::spawn_blocking(move || -> std::io::Result<(Option<u64>, Vec<u8>)> {
        let mut buf = Vec::new();
        let cap = limit as u64 + 1;
        match path {
            Some(path) => {
                let file = std::fs::File::open(path)?;
                // A regular file's size tells at once; the bounded read below still
                // holds for one that grows, or a pipe.
                let meta = file.metadata()?;
                if meta.is_file() && meta.len() > limit as u64 {
                    return Ok((Some(meta.len()), buf));
                }
                file.take(cap).read_to_end(&mut buf)?;
            }
            None => {
                std::io::stdin().lock().take(cap).read_to_end(&mut buf)?;
            }
        }
        Ok((None, buf))
    })
    .await
    .map_err(|e| format!("{what}: reading failed: {e}"))?;
    let buf = match read {
        Ok((Some(len), _)) => return Err(too_large(Some(len))),
        Ok((None, buf)) if buf.len() > limit => return Err(too_large(None)),
        Ok((None, buf)) => buf,
        Err(e) => return Err(format!("{what}: cannot read {source}: {e}")),
    };
    let text =
        String::from_utf8(buf).map_err(|e| format!("{what}: {source} is not UTF-8 text: {e}"))?;
    Ok((what, text.trim().to_owned()))
}
