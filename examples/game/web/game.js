// The game demo's page: joins the game over a WebSocket session
// (/ws/game?instance=..&name=..), draws every tick the module broadcasts,
// and watches the version that serves: a swap shows up as a tick from a new
// version on the same, still open connection.
//
// URL parameters: name, instance; autoplay=1 joins at once and walks the
// board by itself (the browser test and a screenshot use it). The page keeps
// what it saw in window.demo and, as JSON, in #report.
"use strict";

const WIDTH = 16;
const HEIGHT = 12;
const params = new URLSearchParams(location.search);
const demo = {
  session: null, // this connection's session id, from the welcome
  connections: 0, // WebSockets opened by this page: 1 means it never reconnected
  open: false,
  closed: null, // { code, reason } once closed
  version: null,
  servedBy: null,
  versions: [], // every version seen, in order
  swaps: [], // { from, to, tick, session, connection }
  sent: 0,
  acked: 0,
  ticks: 0,
};
window.demo = demo;
let socket = null;

const $ = (id) => document.getElementById(id);

function join(name, instance) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const query = new URLSearchParams({ instance, name });
  socket = new WebSocket(`${scheme}://${location.host}/ws/game?${query}`);
  demo.connections += 1;
  socket.onopen = () => { demo.open = true; report(); };
  socket.onclose = (event) => {
    demo.open = false;
    demo.closed = { code: event.code, reason: event.reason };
    $("connection").textContent = `closed ${event.code} ${event.reason}`;
    report();
  };
  socket.onmessage = (event) => receive(JSON.parse(event.data));
  $("join").hidden = true;
  $("play").hidden = false;
}

function receive(message) {
  switch (message.type) {
    case "welcome":
      demo.session = message.session;
      seen(message.version, message.served_by, 0);
      break;
    case "ack":
      demo.acked = Math.max(demo.acked, message.seq);
      break;
    case "tick":
      demo.ticks += 1;
      seen(message.version, message.served_by, message.tick);
      draw(message);
      break;
  }
  $("connection").textContent =
    `session ${demo.session}, open (${demo.connections === 1 ? "never reconnected" : `${demo.connections} connections`})`;
  report();
}

/** Notes the serving version; a new one on this connection is a swap. */
function seen(version, servedBy, tick) {
  if (demo.version !== null && version !== demo.version) {
    const swap = { from: demo.version, to: version, tick, session: demo.session, connection: demo.connections };
    demo.swaps.push(swap);
    const swaps = $("swaps");
    swaps.className = "swapped";
    swaps.textContent = demo.swaps
      .map((s) => `${s.from} → ${s.to} at tick ${s.tick}, same connection (session ${s.session})`)
      .join("; ");
  }
  if (version !== demo.version) demo.versions.push(version);
  demo.version = version;
  demo.servedBy = servedBy;
  $("version").textContent = `${servedBy} (version ${version})`;
}

function draw(tick) {
  const board = $("board");
  if (board.children.length === 0) {
    for (let i = 0; i < WIDTH * HEIGHT; i += 1) board.appendChild(document.createElement("div"));
  }
  for (const cell of board.children) {
    cell.className = "";
    cell.textContent = "";
  }
  const at = (x, y) => board.children[y * WIDTH + x];
  at(tick.coin.x, tick.coin.y).className = "coin";
  const rows = [];
  for (const player of tick.players) {
    const cell = at(player.x, player.y);
    cell.className = player.session === demo.session ? "player me" : "player";
    cell.textContent = player.name.slice(0, 2);
    const row = document.createElement("tr");
    for (const value of [player.name, player.score, player.level ?? "–"]) {
      const td = document.createElement("td");
      td.textContent = value;
      row.appendChild(td);
    }
    rows.push(row);
  }
  $("scores").tBodies[0].replaceChildren(...rows);
}

function move(dx, dy) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  demo.sent += 1;
  socket.send(JSON.stringify({ type: "move", dx, dy, seq: demo.sent }));
}

function report() {
  $("report").textContent = JSON.stringify(demo);
}

const KEYS = { ArrowUp: [0, -1], ArrowDown: [0, 1], ArrowLeft: [-1, 0], ArrowRight: [1, 0] };
document.addEventListener("keydown", (event) => {
  const step = KEYS[event.key];
  if (step && !$("play").hidden) {
    event.preventDefault();
    move(...step);
  }
});
for (const button of document.querySelectorAll("#pad button")) {
  button.addEventListener("click", () => move(Number(button.dataset.dx), Number(button.dataset.dy)));
}
$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  join($("name").value.trim(), $("instance").value.trim());
});

$("name").value = params.get("name") || $("name").value;
$("instance").value = params.get("instance") || $("instance").value;
if (params.get("autoplay")) {
  join($("name").value, $("instance").value);
  // Walk the board row by row, as a player holding the arrow keys would.
  let step = 0;
  setInterval(() => {
    const row = Math.floor(step / (WIDTH - 1));
    move(row % 2 === 0 ? 1 : -1, 0);
    if (step % (WIDTH - 1) === WIDTH - 2) move(0, 1);
    step += 1;
  }, 150);
}
