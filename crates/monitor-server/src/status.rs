//! `monitor-server status`: a running server's status and clients, read from its admin
//! API, as a table a person reads at a glance (what the PHP server's
//! `php artisan.php tcp:serve status` did), or as JSON.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use monitor_proto::Address;
use serde_json::Value;

use crate::logging::say;

/// `monitor-server status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The admin API's address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9600")]
    pub admin: Address,
    /// Print one JSON object (`{"status":…,"clients":[…]}`) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// A token, when the server requires one (an admin token lists the clients too).
    #[arg(
        long,
        env = "MONITOR_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub timeout: u64,
    /// List every node's clients (a clustered server: `[cluster]`), with their node.
    #[arg(long)]
    pub cluster: bool,
}

/// Runs `status`; exit 0 when the server answered, 1 when it did not.
pub fn main(args: &StatusArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!(
                "monitor-server status: cannot start a runtime: {e}"
            ));
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fetch(args)) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("monitor-server status: {e}"));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn fetch(args: &StatusArgs) -> Result<String, String> {
    let base = format!("http://{}", args.admin);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .build()
        .map_err(|e| e.to_string())?;
    let get = |path: &str| {
        let mut request = client.get(format!("{base}{path}"));
        if let Some(token) = &args.token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let response = get("/api/status")
        .await
        .map_err(|e| format!("no answer from the admin API at {}: {e}", args.admin))?;
    if !response.status().is_success() {
        return Err(format!(
            "the admin API at {} answered {}: {}",
            args.admin,
            response.status(),
            response.text().await.unwrap_or_default().trim()
        ));
    }
    let status: Value = response
        .json()
        .await
        .map_err(|e| format!("the admin API at {} sent no status: {e}", args.admin))?;
    // The client list needs an admin token where authentication is on: without one, the
    // status alone is shown.
    let path = if args.cluster {
        "/api/clients?scope=cluster"
    } else {
        "/api/clients"
    };
    let (clients, clients_note) = match get(path).await {
        Ok(r) if r.status().is_success() => (r.json::<Value>().await.ok(), None),
        Ok(r) => {
            let status = r.status();
            // The refusal's reason, from its envelope ("not in a cluster", say).
            let why = r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v.get("msg").and_then(Value::as_str).map(str::to_owned))
                .map_or_else(String::new, |msg| format!(": {msg}"));
            (None, Some(format!("clients not shown: {status}{why}")))
        }
        Err(e) => (None, Some(format!("clients not shown: {e}"))),
    };
    if args.json {
        let all = serde_json::json!({ "status": status, "clients": clients });
        return Ok(format!("{all}\n"));
    }
    Ok(render(
        &args.admin,
        &status,
        clients.as_ref(),
        clients_note.as_deref(),
        args.cluster,
    ))
}

fn num(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The status and the clients as text tables.
/// `counters.<group>` as `N name, N name`: every member with `all`, else those that are
/// not 0 (`none` when all are).
fn counts(status: &Value, group: &str, all: bool) -> String {
    let Some(members) = status
        .get("counters")
        .and_then(|c| c.get(group))
        .and_then(Value::as_object)
    else {
        return "-".to_owned();
    };
    let listed: Vec<String> = members
        .iter()
        .filter_map(|(name, n)| {
            let n = n.as_u64().unwrap_or(0);
            (all || n > 0).then(|| format!("{n} {name}"))
        })
        .collect();
    if listed.is_empty() {
        "none".to_owned()
    } else {
        listed.join(", ")
    }
}

fn render(
    admin: &Address,
    status: &Value,
    clients: Option<&Value>,
    note: Option<&str>,
    by_node: bool,
) -> String {
    let mut out = String::new();
    let c = |k: &str| num(status, &["counters", k]);
    let draining = if status.get("draining").and_then(Value::as_bool) == Some(true) {
        ", DRAINING"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "monitor-server {} at {admin}: up {}{draining}",
        text(status, "version"),
        duration(num(status, &["uptime_secs"]))
    );
    if let Some(listeners) = status.get("listeners").and_then(Value::as_array) {
        let all: Vec<String> = listeners
            .iter()
            .map(|l| {
                format!(
                    "{} {} ({})",
                    text(l, "name"),
                    text(l, "address"),
                    text(l, "kind")
                )
            })
            .collect();
        let _ = writeln!(out, "listeners:   {}", all.join(", "));
    }
    let roles = ["subscriber", "reporter", "subscriber+reporter", "none"]
        .iter()
        .map(|r| format!("{} {r}", num(status, &["connections", r])))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "connections: {} open ({roles}); {} accepted, {} refused",
        num(status, &["connections", "open"]),
        c("connections_accepted"),
        c("connections_refused")
    );
    let _ = writeln!(
        out,
        "reports:     {} reports, {} pushes queued, {} dropped (slow consumers), {} slow subscribers disconnected",
        c("reports"),
        c("pushes_queued"),
        c("pushes_dropped"),
        c("slow_consumers_disconnected")
    );
    let _ = writeln!(
        out,
        "closed for:  {} protocol errors, {} frame timeouts, {} write timeouts, {} TLS handshake failures",
        c("protocol_errors"),
        c("frame_timeouts"),
        c("write_timeouts"),
        c("tls_handshake_failures")
    );
    let _ = writeln!(
        out,
        "frames in:   {}",
        counts(status, "frames_in_by_type", true)
    );
    let _ = writeln!(
        out,
        "frames out:  {}",
        counts(status, "frames_out_by_type", true)
    );
    let _ = writeln!(
        out,
        "errors:      {}",
        counts(status, "protocol_errors_by_kind", false)
    );
    let _ = writeln!(out, "limits hit:  {}", counts(status, "limits_hit", false));
    let _ = writeln!(
        out,
        "auth:        {} granted, {} unauthorized, {} forbidden, {} closed at reload",
        c("auth_granted"),
        c("auth_unauthorized"),
        c("auth_forbidden"),
        c("auth_closed_at_reload")
    );
    if let Some(cluster) = status.get("cluster").filter(|c| c.is_object()) {
        let state = if cluster.get("up").and_then(Value::as_bool) == Some(true) {
            "up"
        } else {
            "DOWN"
        };
        let _ = writeln!(
            out,
            "cluster:     node {}, redis {} ({state}), channel {}",
            text(cluster, "node_id"),
            text(cluster, "redis"),
            text(cluster, "channel")
        );
        let _ = writeln!(
            out,
            "             {} published, {} failed, {} overflowed; {} received, {} missed, {} rejected",
            c("cluster_published"),
            c("cluster_publish_failed"),
            c("cluster_overflow"),
            c("cluster_received"),
            c("cluster_missed"),
            c("cluster_rejected")
        );
    }
    match clients.and_then(Value::as_array) {
        Some(clients) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let mut header = vec![
                "ID", "PEER", "KIND", "ROLE", "CODE", "TOPICS", "AUTH", "IN", "OUT", "QUEUED",
                "DROPPED", "UP", "IDLE",
            ];
            if by_node {
                header.insert(0, "NODE");
            }
            let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
            for client in clients {
                let topics = client
                    .get("topics")
                    .and_then(Value::as_array)
                    .map(|t| {
                        t.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let since = num(client, &["connected_since_ms"]);
                let last = client.get("last_frame_ms").and_then(Value::as_u64);
                let mut row = vec![
                    num(client, &["id"]).to_string(),
                    text(client, "peer").to_owned(),
                    text(client, "kind").to_owned(),
                    text(client, "role").to_owned(),
                    text(client, "code").to_owned(),
                    if topics.is_empty() {
                        "-".to_owned()
                    } else {
                        topics
                    },
                    text(client, "authenticated_as").to_owned(),
                    num(client, &["frames_in"]).to_string(),
                    num(client, &["frames_out"]).to_string(),
                    num(client, &["pushes_queued"]).to_string(),
                    num(client, &["pushes_dropped"]).to_string(),
                    duration(now.saturating_sub(since) / 1000),
                    last.map_or_else(
                        || "-".to_owned(),
                        |l| duration(now.saturating_sub(l) / 1000),
                    ),
                ];
                if by_node {
                    row.insert(0, text(client, "node").to_owned());
                }
                rows.push(row);
            }
            let scope = if by_node { " in the cluster" } else { "" };
            let _ = writeln!(out, "\n{} clients{scope}", clients.len());
            out.push_str(&table(&rows));
        }
        None => {
            let _ = writeln!(out, "\n{}", note.unwrap_or("clients not shown"));
        }
    }
    out
}

/// Rows as left-aligned columns.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m05s");
        assert_eq!(duration(3 * 3600 + 120), "3h02m");
        assert_eq!(duration(2 * 86_400 + 3600), "2d01h");
    }

    #[test]
    fn the_cluster_shows_its_state_and_every_nodes_clients() {
        let status = serde_json::json!({
            "version": "0.1.0", "uptime_secs": 5,
            "counters": {"cluster_published": 7, "cluster_missed": 2},
            "cluster": {"node_id": "a", "redis": "redis://:****@h:6379", "channel": "m", "up": false},
        });
        let clients = serde_json::json!([
            {"id": 3, "node": "b", "role": "subscriber", "code": "ops", "topics": ["host.*"]},
        ]);
        let admin: Address = "127.0.0.1:9600".parse().unwrap();
        let text = render(&admin, &status, Some(&clients), None, true);
        assert!(
            text.contains("cluster:     node a, redis redis://:****@h:6379 (DOWN), channel m"),
            "{text}"
        );
        assert!(
            text.contains("7 published") && text.contains("2 missed"),
            "{text}"
        );
        assert!(text.contains("1 clients in the cluster"), "{text}");
        let table: Vec<&str> = text.lines().rev().take(2).collect();
        assert!(table[1].starts_with("NODE  ID"), "{text}");
        assert!(table[0].starts_with("b     3 "), "{text}");
        let plain = render(&admin, &serde_json::json!({}), Some(&clients), None, false);
        assert!(
            !plain.contains("cluster") && !plain.contains("NODE"),
            "{plain}"
        );
    }

    #[test]
    fn tables_align() {
        let rows = [
            vec!["ID".to_owned(), "PEER".to_owned()],
            vec!["12".to_owned(), "127.0.0.1:5".to_owned()],
        ];
        assert_eq!(table(&rows), "ID  PEER\n12  127.0.0.1:5\n");
    }
}
