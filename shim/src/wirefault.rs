//! The faulty shim's broken replies ([`ReplyFault`]): a frame-level proxy on the shim's socket in
//! front of the real TTRPC server (which then listens on an abstract socket of its own). Requests
//! pass through unchanged; the reply to the one named method is broken as asked, every other
//! reply passes through. Used only when a reply fault is enabled.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use ttrpc::proto::{
    Codec, MessageHeader, Request, Response, MESSAGE_HEADER_LENGTH, MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
};

use crate::error::{Error, Result};
use crate::faults::ReplyFault;

/// What `huge-reply` announces and sends: 64 MiB, 16 times ttrpc's message limit.
pub const HUGE_REPLY_BYTES: usize = 64 << 20;

/// The payload of `wrong-reply`: a `DeleteResponse { pid: 1, exit_status: 2 }` — varints in
/// fields 1 and 2, where e.g. a `StateResponse` has strings.
const WRONG_PAYLOAD: [u8; 4] = [0x08, 0x01, 0x10, 0x02];

/// The abstract socket name the real server listens on behind the proxy of server `pid`.
pub fn inner_name(pid: u32) -> String {
    format!("reaper-faulty-inner-{pid}")
}

/// Binds the abstract socket for the real server; returns its listening fd.
pub fn bind_inner(name: &str) -> Result<RawFd> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::io::IntoRawFd;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)
        .map_err(|e| Error::io("abstract socket name", e))?;
    let l = std::os::unix::net::UnixListener::bind_addr(&addr)
        .map_err(|e| Error::io(format!("bind @{name}"), e))?;
    Ok(l.into_raw_fd())
}

/// Serves the proxy on `outer` (the shim's listening socket, taken over) until the runtime ends.
pub fn spawn(outer: RawFd, inner: String, fault: ReplyFault, method: &'static str) -> Result<()> {
    // SAFETY: `outer` is the shim's listening socket, owned by nothing else from here on.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(outer) };
    std_listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("proxy listener", e))?;
    let listener = UnixListener::from_std(std_listener).map_err(|e| Error::io("proxy", e))?;
    tracing::warn!(?fault, method, "faulty: replies to {method} are broken");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let inner = inner.clone();
            tokio::spawn(async move {
                if let Err(e) = relay(client, &inner, fault, method).await {
                    tracing::debug!("faulty proxy connection: {e}");
                }
            });
        }
    });
    Ok(())
}

async fn relay(
    client: UnixStream,
    inner: &str,
    fault: ReplyFault,
    method: &'static str,
) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(inner)?;
    let server = std::os::unix::net::UnixStream::connect_addr(&addr)?;
    server.set_nonblocking(true)?;
    let server = UnixStream::from_std(server)?;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let methods: Arc<Mutex<HashMap<u32, String>>> = Arc::default();
    let up = tokio::spawn(requests(cr, sw, methods.clone()));
    let res = replies(sr, cw, methods, fault, method).await;
    up.abort();
    res
}

async fn read_frame<R: AsyncReadExt + Unpin>(
    r: &mut R,
) -> std::io::Result<(MessageHeader, Vec<u8>)> {
    let mut h = [0u8; MESSAGE_HEADER_LENGTH];
    r.read_exact(&mut h).await?;
    let header = MessageHeader::from(&h);
    let mut payload = vec![0u8; header.length as usize];
    r.read_exact(&mut payload).await?;
    Ok((header, payload))
}

async fn write_frame(
    w: &mut OwnedWriteHalf,
    h: MessageHeader,
    payload: &[u8],
) -> std::io::Result<()> {
    let head: Vec<u8> = h.into();
    w.write_all(&head).await?;
    w.write_all(payload).await
}

/// Client to server: remembers each request's method by stream id.
async fn requests(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    methods: Arc<Mutex<HashMap<u32, String>>>,
) -> std::io::Result<()> {
    loop {
        let (h, payload) = read_frame(&mut from).await?;
        if h.type_ == MESSAGE_TYPE_REQUEST {
            if let Ok(req) = Request::decode(&payload) {
                let mut m = methods.lock().unwrap_or_else(|e| e.into_inner());
                m.insert(h.stream_id, req.method.clone());
            }
        }
        let head: Vec<u8> = h.into();
        to.write_all(&head).await?;
        to.write_all(&payload).await?;
    }
}

/// Server to client: breaks the reply to `method` as `fault` says.
async fn replies(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    methods: Arc<Mutex<HashMap<u32, String>>>,
    fault: ReplyFault,
    method: &'static str,
) -> std::io::Result<()> {
    loop {
        let (mut h, mut payload) = read_frame(&mut from).await?;
        let hit = h.type_ == MESSAGE_TYPE_RESPONSE && {
            let mut m = methods.lock().unwrap_or_else(|e| e.into_inner());
            m.remove(&h.stream_id).as_deref() == Some(method)
        };
        if !hit {
            write_frame(&mut to, h, &payload).await?;
            continue;
        }
        tracing::warn!(
            ?fault,
            method,
            stream = h.stream_id,
            "faulty: breaking the reply"
        );
        match fault {
            ReplyFault::Huge => {
                h.length = HUGE_REPLY_BYTES as u32;
                let head: Vec<u8> = h.into();
                to.write_all(&head).await?;
                let chunk = vec![0u8; 1 << 20];
                for _ in 0..HUGE_REPLY_BYTES / chunk.len() {
                    to.write_all(&chunk).await?;
                }
            }
            ReplyFault::Stall | ReplyFault::CloseMidReply => {
                let head: Vec<u8> = h.into();
                to.write_all(&head).await?;
                to.write_all(&payload[..payload.len() / 2]).await?;
                to.flush().await?;
                if fault == ReplyFault::CloseMidReply {
                    to.shutdown().await?;
                    return Ok(());
                }
                // Nothing more on this connection, ever (until the server exits).
                std::future::pending::<()>().await;
            }
            ReplyFault::WrongType => {
                if let Ok(mut resp) = Response::decode(&payload) {
                    resp.payload = WRONG_PAYLOAD.to_vec();
                    if let Ok(p) = resp.encode() {
                        payload = p;
                        h.length = payload.len() as u32;
                    }
                }
                write_frame(&mut to, h, &payload).await?;
            }
        }
    }
}
