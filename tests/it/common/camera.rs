//! A real RTSP camera for tests: GStreamer's RTSP server from Debian
//! (`tests/fixtures/rtsp_cam.py`) streaming an H.264 SMPTE test pattern.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub fn have_gstreamer() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        super::missing_peer("GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0)");
    }
    ok
}

/// A GStreamer RTSP camera at `rtsp://127.0.0.1:PORT/cam`.
pub struct TestCamera {
    child: Child,
    pub port: u16,
}

impl TestCamera {
    pub fn start(port: u16, size: &str, credentials: Option<&str>) -> TestCamera {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rtsp_cam.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(script).arg(port.to_string()).arg(size);
        if let Some(c) = credentials {
            cmd.arg(c);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the GStreamer camera");
        // It prints its URL once it listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("rtsp://"), "camera said {line:?}");
        TestCamera { child, port }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestCamera {
    fn drop(&mut self) {
        self.kill();
    }
}
