//! E-mail over SMTP for notifications: one message per call, over a fresh
//! connection (alerts are rare), with STARTTLS whenever the server offers
//! it (required when a password is to be sent) and AUTH PLAIN or LOGIN.
//! `smtps://` connects with TLS from the start (port 465). Every reply is
//! read with a timeout, so a server that stalls fails the attempt (the
//! queue retries it) instead of holding the sender.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where and as whom to send.
pub struct Server<'a> {
    /// `smtp://host:port` (STARTTLS) or `smtps://host:port` (TLS at once).
    pub url: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub tls: Option<Arc<ClientConfig>>,
}

/// A message: the envelope and the text, already in RFC 5322 form.
pub struct Mail<'a> {
    pub from: &'a str,
    pub to: &'a [String],
    pub data: &'a str,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Session {
    io: BufReader<Box<dyn Stream>>,
}

impl Session {
    /// Reads a (multi-line) reply; its code and text.
    async fn reply(&mut self) -> Result<(u16, String), String> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(STEP_TIMEOUT, self.io.read_line(&mut line))
                .await
                .map_err(|_| "the SMTP server did not answer in time".to_string())?
                .map_err(|e| format!("SMTP: {e}"))?;
            if n == 0 {
                return Err("the SMTP server closed the connection".into());
            }
            if line.len() > 4096 || text.len() > 65_536 {
                return Err("the SMTP server's reply is too long".into());
            }
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("not an SMTP reply: {:?}", line.trim_end()))?;
            text.push_str(line.get(4..).unwrap_or("").trim_end());
            text.push('\n');
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), String> {
        let io = self.io.get_mut();
        tokio::time::timeout(STEP_TIMEOUT, async {
            io.write_all(line.as_bytes()).await?;
            io.write_all(b"\r\n").await?;
            io.flush().await
        })
        .await
        .map_err(|_| "the SMTP server did not take the command in time".to_string())?
        .map_err(|e| format!("SMTP: {e}"))
    }

    /// Sends a command and wants a reply of class `want` (2 or 3).
    async fn command(&mut self, line: &str, want: u16, what: &str) -> Result<String, String> {
        self.send(line).await?;
        let (code, text) = self.reply().await?;
        if code / 100 != want {
            return Err(format!(
                "the SMTP server refused {what}: {code} {}",
                text.trim()
            ));
        }
        Ok(text)
    }
}

async fn tls(
    stream: Box<dyn Stream>,
    host: &str,
    config: &Option<Arc<ClientConfig>>,
) -> Result<Box<dyn Stream>, String> {
    let config = config
        .clone()
        .ok_or("TLS is not available (no client configuration)")?;
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let tls = TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS with the SMTP server: {e}"))?;
    Ok(Box::new(tls))
}

/// Sends one message.
pub async fn send(server: &Server<'_>, mail: &Mail<'_>) -> Result<(), String> {
    let (implicit_tls, rest) = match server.url.split_once("://") {
        Some(("smtp", r)) => (false, r),
        Some(("smtps", r)) => (true, r),
        _ => return Err(format!("{}: not an smtp:// or smtps:// URL", server.url)),
    };
    let hostport = rest.trim_end_matches('/');
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("bad port in {hostport}"))?,
        ),
        None => (hostport, if implicit_tls { 465 } else { 587 }),
    };
    let tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| format!("connecting to {host}:{port} timed out"))?
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let mut stream: Box<dyn Stream> = Box::new(tcp);
    if implicit_tls {
        stream = tls(stream, host, &server.tls).await?;
    }
    let mut s = Session {
        io: BufReader::new(stream),
    };
    let (code, greeting) = s.reply().await?;
    if code != 220 {
        return Err(format!(
            "the SMTP server greeted {code} {}",
            greeting.trim()
        ));
    }
    let me = base::host::host_name();
    let mut ehlo = s.command(&format!("EHLO {me}"), 2, "EHLO").await?;
    let offers = |ehlo: &str, what: &str| {
        ehlo.lines()
            .any(|l| l.to_ascii_uppercase().split_whitespace().next() == Some(what))
    };
    if !implicit_tls {
        if offers(&ehlo, "STARTTLS") {
            s.command("STARTTLS", 2, "STARTTLS").await?;
            let plain = s.io.into_inner();
            s = Session {
                io: BufReader::new(tls(plain, host, &server.tls).await?),
            };
            ehlo = s.command(&format!("EHLO {me}"), 2, "EHLO").await?;
        } else if server.password.is_some() {
            return Err(
                "the SMTP server does not offer STARTTLS: the password is not sent in clear".into(),
            );
        }
    }
    if let (Some(user), Some(password)) = (server.username, server.password) {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let auth = ehlo
            .lines()
            .find(|l| l.to_ascii_uppercase().starts_with("AUTH"))
            .unwrap_or("")
            .to_ascii_uppercase();
        if auth.contains("PLAIN") {
            let token = b64(&format!("\0{user}\0{password}"));
            s.command(
                &format!("AUTH PLAIN {token}"),
                2,
                "the user name or password",
            )
            .await?;
        } else if auth.contains("LOGIN") {
            s.command("AUTH LOGIN", 3, "AUTH LOGIN").await?;
            s.command(&b64(user), 3, "the user name").await?;
            s.command(&b64(password), 2, "the user name or password")
                .await?;
        } else {
            return Err("the SMTP server offers neither AUTH PLAIN nor LOGIN".into());
        }
    }
    s.command(&format!("MAIL FROM:<{}>", mail.from), 2, "the sender")
        .await?;
    for to in mail.to {
        s.command(
            &format!("RCPT TO:<{to}>"),
            2,
            &format!("the recipient {to}"),
        )
        .await?;
    }
    s.command("DATA", 3, "DATA").await?;
    // Dot-stuffing: a line that starts with a dot gets another.
    let mut body = String::with_capacity(mail.data.len() + 64);
    for line in mail.data.lines() {
        if line.starts_with('.') {
            body.push('.');
        }
        body.push_str(line);
        body.push_str("\r\n");
    }
    body.push('.');
    s.command(&body, 2, "the message").await?;
    let _ = s.send("QUIT").await;
    Ok(())
}
