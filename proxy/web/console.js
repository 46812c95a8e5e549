// The console page: noVNC's RFB client on the session's WebSocket. The proxy
// has already answered the VNC server's password, so the browser only ever
// sees security type None; the access token travels as a WebSocket
// subprotocol, never in a URL the server logs.
import RFB from "../core/rfb.js";

const settings = document.body.dataset;
const $ = (id) => document.getElementById(id);

const status = (text) => { $("status").textContent = text; };

// The access token rides in the fragment, which browsers never send. Take it,
// then drop it from the address bar and history.
const token = new URLSearchParams(location.hash.slice(1)).get("token");
if (location.hash) {
  history.replaceState(null, "", location.pathname + location.search);
}

const minutes = (seconds) => {
  if (seconds < 60) return `${seconds} seconds`;
  const m = Math.round(seconds / 60);
  return m === 1 ? "1 minute" : `${m} minutes`;
};

// Why the hypervisor would not give the console, by failure kind.
const failures = {
  "unreachable": "The hypervisor cannot be reached.",
  "tls-verification":
    "The hypervisor's TLS certificate is not the one configured, so porthole did not connect.",
  "bad-credentials": "The hypervisor rejected porthole's credentials.",
  "permission-denied": "porthole's hypervisor account may not open this VM's console.",
  "vm-not-found": "The hypervisor does not know this VM.",
  "vm-not-running": "The VM is not running. Start it, then ask for a new console.",
  "listener-timeout": "The hypervisor's console was gone before porthole could connect to it.",
  "ticket-rejected": "The hypervisor rejected the console ticket it had just issued.",
  "vnc-authentication": "The VM's VNC server rejected the console password.",
  "protocol": "The hypervisor answered in a way porthole does not understand.",
};

// Close reasons the proxy sends (its end reasons and refusals), in words.
function explain(reason) {
  const idle = Number(settings.idleSeconds);
  const fixed = {
    "expired": "The session reached its time limit.",
    "idle": idle > 0 ? `Closed after ${minutes(idle)} without input.` : "Closed for lack of input.",
    "never-connected": "Nobody connected in time, so the session ended.",
    "completed": "The session has ended.",
    "proxy-stopping": "The console proxy stopped. Either the session has ended, or its proxy is moving: then reload this page in a few seconds to reconnect.",
    "upstream-closed": "The VM closed its console.",
    "another viewer is connected": "Another viewer is connected. Try again once they have left.",
    "the session was for one viewer, who has already connected":
      "This link was for a single visit, and it has been used.",
  };
  if (reason in fixed) return fixed[reason];
  const failed = "upstream-failed:";
  if (reason.startsWith(failed)) {
    // "upstream-failed: KIND: DETAIL" (the detail may be cut short).
    const rest = reason.slice(failed.length).trim();
    const colon = rest.indexOf(":");
    const kind = colon < 0 ? rest : rest.slice(0, colon);
    const detail = colon < 0 ? "" : rest.slice(colon + 1).trim();
    if (kind in failures) return detail ? `${failures[kind]} (${detail})` : failures[kind];
    return `The VM's console could not be reached: ${rest}`;
  }
  const unrecorded = "recording-failed";
  if (reason.startsWith(unrecorded)) {
    // "recording-failed: DETAIL": the session must be recorded, and cannot be.
    const detail = reason.slice(unrecorded.length).replace(/^:/, "").trim();
    const text = "This session is recorded, and the recording could not be written, so the console was not shown.";
    return detail ? `${text} (${detail})` : text;
  }
  return reason;
}

function end(text) {
  $("screen").hidden = true;
  $("countdown").hidden = true;
  $("ended").hidden = false;
  $("reason").textContent = text;
  status("Disconnected");
}

// The hard limit, counted down once it is near.
function countdown() {
  const expiresAt = Date.parse(settings.expiresAt);
  if (Number.isNaN(expiresAt)) return;
  const show = () => {
    const left = Math.max(0, Math.ceil((expiresAt - Date.now()) / 1000));
    const element = $("countdown");
    element.hidden = left > 300 || !$("ended").hidden;
    element.classList.toggle("urgent", left <= 60);
    const pad = String(left % 60).padStart(2, "0");
    element.textContent = `Ends in ${Math.floor(left / 60)}:${pad}`;
  };
  show();
  setInterval(show, 1000);
}

function connect() {
  if (!token) {
    end("This link has no access token. Open the link you were given, in full.");
    return;
  }
  const url = new URL(settings.socket, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  // Our own socket, handed to noVNC, so the close reason (why the session
  // ended) is ours to show.
  const socket = new WebSocket(url, ["binary", settings.tokenPrefix + token]);
  let reason = "";
  let opened = false;
  socket.addEventListener("open", () => { opened = true; });
  socket.addEventListener("close", (e) => { reason = e.reason; });

  status("Connecting…");
  const rfb = new RFB($("screen"), socket, { shared: true });
  rfb.scaleViewport = true;
  rfb.viewOnly = settings.viewOnly === "true";
  rfb.addEventListener("connect", () => {
    status(rfb.viewOnly ? "Connected (view only)" : "Connected");
    rfb.focus();
  });
  rfb.addEventListener("disconnect", () => {
    // Our close listener came first, so the reason is known; the timeout
    // only lets noVNC finish tearing down.
    setTimeout(() => {
      if (reason) end(explain(reason));
      else if (!opened) end("Could not connect. The link may be wrong, or the session over.");
      else end("The connection was lost.");
    }, 0);
  });
}

countdown();
connect();
