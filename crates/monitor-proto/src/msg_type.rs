//! Message types and their directions: the vocabulary every other module uses, so it
//! sits below them all (it imports nothing of the crate).

use std::fmt;

/// The type of a frame (header byte 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MsgType {
    /// Client → server: ask for a session key (X25519 or legacy).
    KeyRequest = 1,
    /// Server → client: the answer to a key request. Never encrypted.
    KeyReply = 2,
    /// Client → server: keep-alive.
    Heartbeat = 3,
    /// Server → client: the answer to a heartbeat. Never encrypted.
    HeartbeatReply = 4,
    /// Client → server: subscribe to pushes (a "push request").
    Subscribe = 5,
    /// Server → client: the subscribe acknowledgement, then every pushed report.
    Push = 6,
    /// Client → server: a report to fan out.
    Report = 7,
    /// Server → client: the acknowledgement of a report.
    ReportAck = 8,
}

impl MsgType {
    /// Every type, in wire order.
    pub const ALL: [MsgType; 8] = [
        MsgType::KeyRequest,
        MsgType::KeyReply,
        MsgType::Heartbeat,
        MsgType::HeartbeatReply,
        MsgType::Subscribe,
        MsgType::Push,
        MsgType::Report,
        MsgType::ReportAck,
    ];

    /// The type for a wire byte, if it is one of 1..=8.
    pub const fn from_u8(byte: u8) -> Option<MsgType> {
        Some(match byte {
            1 => MsgType::KeyRequest,
            2 => MsgType::KeyReply,
            3 => MsgType::Heartbeat,
            4 => MsgType::HeartbeatReply,
            5 => MsgType::Subscribe,
            6 => MsgType::Push,
            7 => MsgType::Report,
            8 => MsgType::ReportAck,
            _ => return None,
        })
    }

    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Which way frames of this type travel.
    pub const fn direction(self) -> Direction {
        match self {
            MsgType::KeyRequest | MsgType::Heartbeat | MsgType::Subscribe | MsgType::Report => {
                Direction::ClientToServer
            }
            MsgType::KeyReply | MsgType::HeartbeatReply | MsgType::Push | MsgType::ReportAck => {
                Direction::ServerToClient
            }
        }
    }

    /// Whether this is a client request (1, 3, 5, 7).
    pub const fn is_request(self) -> bool {
        matches!(self.direction(), Direction::ClientToServer)
    }

    /// The type a server answers this request with, if it is a request.
    pub const fn reply_type(self) -> Option<MsgType> {
        match self {
            MsgType::KeyRequest => Some(MsgType::KeyReply),
            MsgType::Heartbeat => Some(MsgType::HeartbeatReply),
            MsgType::Subscribe => Some(MsgType::Push),
            MsgType::Report => Some(MsgType::ReportAck),
            _ => None,
        }
    }

    /// Replies of this type are never encrypted (key and heartbeat replies), so a client
    /// can always read them, whatever state its key is in.
    pub const fn never_encrypted(self) -> bool {
        matches!(self, MsgType::KeyReply | MsgType::HeartbeatReply)
    }
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            MsgType::KeyRequest => "key request",
            MsgType::KeyReply => "key reply",
            MsgType::Heartbeat => "heartbeat",
            MsgType::HeartbeatReply => "heartbeat reply",
            MsgType::Subscribe => "subscribe",
            MsgType::Push => "push",
            MsgType::Report => "report",
            MsgType::ReportAck => "report ack",
        };
        write!(f, "{name} ({})", self.as_u8())
    }
}

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Requests: key request, heartbeat, subscribe, report.
    ClientToServer,
    /// Replies and pushes.
    ServerToClient,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::ClientToServer => "client-to-server",
            Direction::ServerToClient => "server-to-client",
        })
    }
}
