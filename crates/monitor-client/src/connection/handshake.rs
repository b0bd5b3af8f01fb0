//! What makes a new connection usable before a client is given it: opened, authenticated
//! (a token), keys exchanged (X25519, for the in-band encryption), then subscribed or its
//! first heartbeat answered, all within the connect timeout, which names the step that
//! got no answer.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use monitor_proto::layer::kex::ClientHandshake;
use monitor_proto::message::reply::{KeyReplyData, Reply};
use monitor_proto::message::request::KeyRequest;
use monitor_proto::MsgType;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tracing::debug;

use super::transport::{open_transport, Dialer};
use super::Connection;
use crate::config::ClientConfig;
use crate::error::{with_causes, Error, Result};
use crate::tls;

/// The handshake steps, as errors name them (the TLS one is [`tls::TLS_HANDSHAKE`]).
const AUTHENTICATION: &str = "authentication";
const KEY_EXCHANGE: &str = "key exchange";
const SUBSCRIBE: &str = "subscribe";
const HEARTBEAT: &str = "heartbeat";

/// The handshake that proves a new connection works before it is used.
#[derive(Debug, Clone)]
pub(crate) enum Handshake {
    /// Subscribe with this body and wait for the acknowledgement (a push receiver).
    Subscribe(Bytes),
    /// Send a heartbeat and wait for its reply (a reporter: a connection is not trusted
    /// with reports until the server has answered on it).
    Heartbeat,
}

impl Connection {
    /// Connects (with TLS if the dialer says so), authenticates if the config has a token,
    /// exchanges keys if `encrypt` is set, and does `handshake`, all within
    /// `connect_timeout`.
    pub(crate) async fn establish(
        cfg: &ClientConfig,
        dialer: &Dialer,
        handshake: &Handshake,
    ) -> Result<Connection> {
        // The handshake step under way, to say which one got no answer if time runs out;
        // `None` while the connection is being opened. Behind a lock (uncontended) because
        // the transport's TLS callback sets it too, and the future must stay `Send`.
        let step = std::sync::Mutex::new(None::<&'static str>);
        let set_step = |s| {
            *step
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s)
        };
        let attempt = async {
            let (reader, writer) =
                open_transport(&cfg.server, dialer, || set_step(tls::TLS_HANDSHAKE)).await?;
            let codec = cfg.codec();
            let key = codec.key_slot().clone();
            let mut conn = Connection {
                reader: FramedRead::new(reader, codec),
                writer,
                wbuf: BytesMut::new(),
                encoder: cfg.encoder(),
                key,
                uuid: cfg.uuid,
                compress: cfg.compress,
                encrypt: cfg.encrypt,
                last_rx: Instant::now(),
            };
            // Authentication comes first (spec §6): an authenticating server takes only key
            // requests and heartbeats before it. With encryption, one key request does both.
            let token = cfg.token.as_ref().map(|t| t.expose());
            if cfg.encrypt {
                set_step(KEY_EXCHANGE);
                conn.key_exchange(token).await?;
            } else if let Some(token) = token {
                set_step(AUTHENTICATION);
                conn.authenticate(token).await?;
            }
            match handshake {
                Handshake::Subscribe(body) => {
                    set_step(SUBSCRIBE);
                    let ack = conn
                        .request(MsgType::Subscribe, body.clone(), SUBSCRIBE)
                        .await?;
                    if !ack.is_success() {
                        return Err(refusal(ack, SUBSCRIBE, |msg| Error::SubscribeRefused {
                            msg,
                        }));
                    }
                }
                Handshake::Heartbeat => {
                    set_step(HEARTBEAT);
                    let reply = conn
                        .request(MsgType::Heartbeat, Bytes::new(), HEARTBEAT)
                        .await?;
                    if !reply.is_success() {
                        return Err(Error::BadReply {
                            reason: format!("heartbeat refused: {}", reply.msg),
                        });
                    }
                }
            }
            conn.last_rx = Instant::now();
            Ok(conn)
        };
        let outcome = tokio::time::timeout(cfg.connect_timeout, attempt).await;
        let address = cfg.server.to_string();
        let after = cfg.connect_timeout;
        let step = *step
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (outcome, step) {
            (Ok(result), _) => result.map_err(|e| dialer.tls_failure(e, &address)),
            (Err(_), None) => Err(Error::ConnectTimeout { address, after }),
            (Err(_), Some(step)) => Err(Error::HandshakeTimeout {
                address,
                step,
                after,
            }),
        }
    }

    /// X25519: sends our public key (and the token, if any: one request authenticates
    /// too), derives the session key from the server's, and installs it in the reader's
    /// key slot so encrypted replies and pushes decrypt.
    async fn key_exchange(&mut self, token: Option<&str>) -> Result<()> {
        let handshake = ClientHandshake::new();
        let body = KeyRequest::body(Some(&handshake.public_key_base64()), token);
        let reply = self
            .request(MsgType::KeyRequest, body, KEY_EXCHANGE)
            .await?;
        if !reply.is_success() {
            return Err(refusal(reply, KEY_EXCHANGE, |reason| Error::KeyExchange {
                reason,
            }));
        }
        let data: KeyReplyData = reply.data_as().map_err(|e| Error::KeyExchange {
            reason: with_causes(&e),
        })?;
        let pubkey = data.pubkey.ok_or_else(|| Error::KeyExchange {
            reason: "the key reply has no pubkey".into(),
        })?;
        let key = handshake
            .finish(&pubkey, &self.uuid)
            .map_err(|e| Error::KeyExchange {
                reason: with_causes(&e),
            })?;
        self.key.set(Some(key));
        Ok(())
    }

    /// A key request with the token alone: it only authenticates (spec §6), and the
    /// server answers `{"authenticated": true}`.
    async fn authenticate(&mut self, token: &str) -> Result<()> {
        let body = KeyRequest::body(None, Some(token));
        let reply = self
            .request(MsgType::KeyRequest, body, AUTHENTICATION)
            .await?;
        if !reply.is_success() {
            return Err(refusal(reply, AUTHENTICATION, |msg| Error::KeyExchange {
                reason: format!("the server refused the authentication request: {msg}"),
            }));
        }
        // A server that knows no tokens may answer otherwise (a legacy key): what it
        // does not check, it does not refuse later either.
        let authenticated = reply
            .data_as::<KeyReplyData>()
            .is_ok_and(|d| d.authenticated == Some(true));
        if !authenticated {
            debug!("the server did not say `authenticated`; it may not check tokens");
        }
        Ok(())
    }

    /// Sends one request and reads until its reply type arrives (anything else is
    /// skipped); returns the parsed envelope.
    async fn request(
        &mut self,
        msg_type: MsgType,
        body: Bytes,
        during: &'static str,
    ) -> Result<Reply> {
        self.queue(msg_type, body)?;
        self.flush().await?;
        let want = msg_type.reply_type();
        loop {
            let received = match self.reader.next().await {
                None => return Err(Error::ClosedDuringHandshake { during }),
                Some(frame) => frame?,
            };
            if Some(received.header.msg_type) != want {
                debug!(msg_type = %received.header.msg_type, during, "skipped a frame during a handshake");
                continue;
            }
            let body = received.body.map_err(monitor_proto::Error::Body)?;
            return Reply::parse(&body).map_err(|e| Error::BadReply {
                reason: format!("{during} reply: {}", with_causes(&e)),
            });
        }
    }
}

/// The error for a refused handshake request: [`Error::Unauthorized`] for the server's
/// "unauthorized" (a token it does not know), `other(msg)` for anything else.
fn refusal(reply: Reply, during: &'static str, other: impl FnOnce(String) -> Error) -> Error {
    if reply.msg == UNAUTHORIZED {
        Error::Unauthorized { during }
    } else {
        other(reply.msg)
    }
}

/// The `msg` of a reply refusing a token (spec §6).
const UNAUTHORIZED: &str = "unauthorized";
