// vgw status page: polls /status.json every 2 s, updates the server-rendered page in place and draws
// per-connection throughput charts from byte-counter deltas. Plain DOM; text goes in via textContent only.
"use strict";

(function () {
  const POLL_MS = 2000;
  const SAMPLES = 60;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const W = 300;
  const H = 64;

  // name -> { t, inBytes, outBytes, samples: [{ inBps, outBps }] }
  const history = new Map();

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) node.setAttribute(k, v);
    }
    for (const c of children || []) {
      node.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function count(n) {
    return String(Math.trunc(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function bytes(n) {
    const units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if (n < 1024) return n + " B";
    let v = n / 1024;
    let u = 0;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return v.toFixed(2) + " " + units[u];
  }

  function bits(bps) {
    const units = ["b/s", "kb/s", "Mb/s", "Gb/s", "Tb/s"];
    let v = bps;
    let u = 0;
    while (v >= 1000 && u < units.length - 1) { v /= 1000; u++; }
    return (u === 0 ? Math.round(v) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[u];
  }

  function duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + sec + "s";
    return sec + "s";
  }

  function listText(items) {
    return items && items.length ? items.join(", ") : "\u2014";
  }

  const BADGE = { Connected: "ok", Connecting: "warn", NotConnected: "bad", Unknown: "unknown" };

  function lastErrorText(err) {
    if (!err || typeof err.message !== "string") return null;
    const ctx = [];
    for (const key of ["exchange", "notify"]) {
      const v = err[key];
      if (v !== undefined && v !== null) ctx.push(key + " " + (typeof v === "string" ? v : JSON.stringify(v)));
    }
    return ctx.length ? err.message + " (" + ctx.join(", ") + ")" : err.message;
  }

  function setText(id, text) {
    const node = $(id);
    if (node && node.textContent !== text) node.textContent = text;
  }

  function facts(pairs) {
    const dl = el("dl", { class: "facts" });
    for (const [label, id, value] of pairs) {
      dl.append(el("div", {}, [el("dt", {}, [label]), el("dd", { id: id }, [value])]));
    }
    return dl;
  }

  function renderGateway(g) {
    const box = $("gateway");
    if (!g) {
      box.replaceChildren(el("p", { class: "empty" }, [
        "No gateway is configured yet. Create one with ", el("code", {}, ["vgw vnet-gateway create"]), ".",
      ]));
      return;
    }
    let bgp = "Disabled";
    if (g.enableBgp) {
      const b = g.bgpSettings;
      bgp = b ? "ASN " + b.asn : "Enabled";
      if (b && b.bgpPeeringAddress) bgp += " \u00b7 " + b.bgpPeeringAddress;
      if (b && b.customBgpIpAddresses.length) bgp += " \u00b7 APIPA " + b.customBgpIpAddresses.join(", ");
    }
    const p2s = g.pointToSite
      ? g.pointToSite.addressPool.join(", ") + " \u00b7 " + g.pointToSite.protocols.join(", ")
      : "Not configured";
    const pairs = [
      ["Name", "gw-name", g.name],
      ["SKU / type", "gw-sku", g.sku + " \u00b7 " + g.gatewayType + " \u00b7 " + g.vpnType + (g.activeActive ? " \u00b7 active-active" : "")],
      ["Public IPs", "gw-ips", listText(g.publicIpAddresses)],
      ["Address space", "gw-space", listText(g.addressSpace)],
      ["Custom routes", "gw-routes", listText(g.customRoutes)],
      ["BGP", "gw-bgp", bgp],
      ["Point-to-site", "gw-p2s", p2s],
    ];
    if (g.natRules.length) pairs.push(["NAT rules", "gw-nat", g.natRules.join(", ")]);
    box.replaceChildren(facts(pairs));
  }

  function renderDaemon(d) {
    setText("d-version", d.version);
    setText("d-uptime", duration(d.uptimeSeconds));
    setText("d-started", d.startedAt);
    setText("d-dataplane", d.dataplaneRunning ? "Running" : "Off (status is Unknown)");
  }

  function renderCounts(id, items, key, emptyText) {
    const nonzero = items.filter((r) => r.count > 0);
    const box = $(id);
    if (!nonzero.length) {
      box.replaceChildren(el("p", { class: "empty" }, [emptyText]));
      return;
    }
    box.replaceChildren(el("ul", { class: "counts" }, nonzero.map((r) =>
      el("li", {}, [el("span", { class: "mono" }, [r[key]]), el("b", {}, [count(r.count)])]))));
  }

  function renderKpis(conns) {
    const n = (s) => conns.filter((c) => c.connectionStatus === s).length;
    setText("k-total", String(conns.length));
    setText("k-connected", String(n("Connected")));
    setText("k-down", String(n("NotConnected")));
    setText("k-unknown", String(n("Unknown") + n("Connecting")));
    setText("k-in", bytes(conns.reduce((a, c) => a + c.ingressBytesTransferred, 0)));
    setText("k-out", bytes(conns.reduce((a, c) => a + c.egressBytesTransferred, 0)));
  }

  function byteSpan(n) {
    return el("span", { title: count(n) + " bytes" }, [bytes(n)]);
  }

  function connRow(c) {
    const status = el("td", {}, [el("span", { class: "badge " + (BADGE[c.connectionStatus] || "unknown") }, [c.connectionStatus])]);
    if (c.connectionStatus === "Connected") {
      const t = (c.tunnels || []).find((x) => x.lastConnectionEstablishedUtcTime);
      if (t) status.append(el("span", { class: "sub" }, ["since " + t.lastConnectionEstablishedUtcTime]));
    } else {
      if (c.connectionStatusReason) status.append(el("span", { class: "reason mono" }, [c.connectionStatusReason]));
      const text = lastErrorText(c.lastError);
      if (text) status.append(el("span", { class: "error" }, [text]));
    }
    const ts = c.ingressPacketDropTsMismatch + c.egressPacketDropTsMismatch;
    return el("tr", { "data-conn": c.name }, [
      el("td", {}, [
        el("span", { class: "conn-name" }, [c.name]),
        el("span", { class: "sub" }, [c.connectionType + (c.enableBgp ? " \u00b7 BGP" : "")]),
      ]),
      el("td", {}, [
        el("span", { class: "site" }, [c.localNetworkGateway]),
        el("span", { class: "sub mono" }, [c.remoteAddress || "\u2014"]),
        el("span", { class: "sub mono" }, [listText(c.remoteAddressSpace)]),
      ]),
      status,
      el("td", { class: "num" }, [byteSpan(c.ingressBytesTransferred), el("span", { class: "sub" }, [byteSpan(c.egressBytesTransferred)])]),
      el("td", { class: "num" }, [count(c.ingressPackets), el("span", { class: "sub" }, [count(c.egressPackets)])]),
      el("td", { class: "num" }, [String(c.childSaCount)]),
      el("td", { class: "num" }, [count(c.ikeSaRekeys), el("span", { class: "sub" }, [count(c.childSaRekeys)])]),
      el("td", { class: "num" + (ts > 0 ? " warn-text" : "") }, [
        count(ts),
        el("span", { class: "sub" }, [count(c.ingressPacketDropTsMismatch) + " / " + count(c.egressPacketDropTsMismatch)]),
      ]),
    ]);
  }

  function renderConnections(conns) {
    const body = $("conn-rows");
    if (!conns.length) {
      body.replaceChildren(el("tr", { class: "empty-row" }, [el("td", { colspan: "8" }, [
        "No connections are configured. Create one with ", el("code", {}, ["vgw vpn-connection create"]), ".",
      ])]));
      return;
    }
    body.replaceChildren(...conns.map(connRow));
  }

  // Records one sample per connection from the counter deltas since the previous poll.
  function sample(conns, t) {
    const seen = new Set();
    for (const c of conns) {
      seen.add(c.name);
      let h = history.get(c.name);
      if (!h) {
        h = { t: t, inBytes: c.ingressBytesTransferred, outBytes: c.egressBytesTransferred, samples: [] };
        history.set(c.name, h);
        continue;
      }
      const dt = (t - h.t) / 1000;
      const dIn = c.ingressBytesTransferred - h.inBytes;
      const dOut = c.egressBytesTransferred - h.outBytes;
      if (dt > 0 && dIn >= 0 && dOut >= 0) {
        h.samples.push({ inBps: (dIn * 8) / dt, outBps: (dOut * 8) / dt });
        if (h.samples.length > SAMPLES) h.samples.shift();
      } else if (dIn < 0 || dOut < 0) {
        h.samples = []; // counters restarted (connection re-created or daemon restarted)
      }
      h.t = t;
      h.inBytes = c.ingressBytesTransferred;
      h.outBytes = c.egressBytesTransferred;
    }
    for (const name of [...history.keys()]) if (!seen.has(name)) history.delete(name);
  }

  function niceMax(v) {
    if (v <= 1000) return 1000;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function points(samples, key, max) {
    const step = W / (SAMPLES - 1);
    const x0 = W - (samples.length - 1) * step;
    return samples.map((s, i) => {
      const x = x0 + i * step;
      const y = H - 1 - (s[key] / max) * (H - 4);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
  }

  function chartFigure(name) {
    const fig = el("figure", { class: "chart", "data-conn": name }, [
      el("figcaption", {}, [
        el("span", { class: "chart-name" }, [name]),
        el("span", { class: "legend" }, [
          el("span", { class: "in" }, ["\u25bc in ", el("b", { class: "rate-in" }, ["\u2014"])]),
          el("span", { class: "out" }, ["\u25b2 out ", el("b", { class: "rate-out" }, ["\u2014"])]),
        ]),
      ]),
    ]);
    const s = svg("svg", { class: "spark", viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img" });
    s.setAttribute("aria-label", "Throughput of " + name);
    fig.append(s, el("span", { class: "chart-note" }, ["Waiting for samples (updates every 2 s)."]));
    return fig;
  }

  function drawChart(fig, h) {
    const s = fig.querySelector("svg");
    const samples = h ? h.samples : [];
    const max = niceMax(Math.max(0, ...samples.map((x) => Math.max(x.inBps, x.outBps))));
    const kids = [
      svg("line", { class: "grid-line", x1: 0, y1: (H / 2).toFixed(1), x2: W, y2: (H / 2).toFixed(1) }),
      svg("line", { class: "axis", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }),
    ];
    if (samples.length >= 2) {
      const pin = points(samples, "inBps", max);
      const first = pin[0].split(",")[0];
      const last = pin[pin.length - 1].split(",")[0];
      kids.push(svg("polygon", { class: "area-in", points: first + "," + H + " " + pin.join(" ") + " " + last + "," + H }));
      kids.push(svg("polyline", { class: "line-in", points: pin.join(" ") }));
      kids.push(svg("polyline", { class: "line-out", points: points(samples, "outBps", max).join(" ") }));
    }
    s.replaceChildren(...kids);
    const cur = samples[samples.length - 1];
    fig.querySelector(".rate-in").textContent = cur ? bits(cur.inBps) : "\u2014";
    fig.querySelector(".rate-out").textContent = cur ? bits(cur.outBps) : "\u2014";
    fig.querySelector(".chart-note").textContent = samples.length >= 2
      ? "Scale 0 \u2013 " + bits(max) + " \u00b7 " + samples.length + " samples, every 2 s"
      : "Waiting for samples (updates every 2 s).";
  }

  function renderCharts(conns) {
    const box = $("charts");
    if (!conns.length) {
      box.replaceChildren(el("p", { class: "empty" }, ["Charts appear here once a connection exists."]));
      return;
    }
    const existing = new Map();
    for (const fig of box.querySelectorAll("figure.chart")) existing.set(fig.getAttribute("data-conn"), fig);
    const figs = conns.map((c) => {
      const fig = existing.get(c.name) || chartFigure(c.name);
      if (!fig.querySelector(".rate-in")) return chartFigure(c.name);
      return fig;
    });
    box.replaceChildren(...figs);
    conns.forEach((c, i) => drawChart(figs[i], history.get(c.name)));
  }

  function table(headers, rows) {
    return el("table", {}, [
      el("thead", {}, [el("tr", {}, headers.map(([h, cls]) => el("th", { class: cls }, [h])))]),
      el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map(([v, cls]) => el("td", { class: cls }, [String(v)]))))),
    ]);
  }

  function renderBgp(doc) {
    const peers = $("bgp-peers");
    if (!doc.bgpPeers.length) {
      const on = doc.gateway && doc.gateway.enableBgp;
      peers.replaceChildren(el("p", { class: "empty" }, [on
        ? "BGP is enabled but no peers are reported yet: the BGP engine is not running in this build."
        : "BGP is not configured on this gateway."]));
    } else {
      peers.replaceChildren(table(
        [["Neighbor"], ["ASN"], ["Connection"], ["State"], ["Up", "num"], ["Routes rx / tx", "num"]],
        doc.bgpPeers.map((p) => [[p.neighbor, "mono"], [p.asn], [p.connectionName], [p.state],
          [duration(p.uptimeSeconds), "num"], [p.routesReceived + " / " + p.routesAdvertised, "num"]])));
    }
    const routes = $("learned-routes");
    if (!doc.learnedRoutes.length) {
      routes.replaceChildren(el("p", { class: "empty" }, ["No learned routes: routes learned over BGP appear here."]));
    } else {
      routes.replaceChildren(table(
        [["Prefix"], ["Next hop"], ["From"], ["AS path"], ["Weight", "num"]],
        doc.learnedRoutes.map((r) => [[r.prefix, "mono"], [r.nextHop, "mono"], [r.sourcePeer, "mono"],
          [r.asPath, "mono"], [r.weight, "num"]])));
    }
  }

  function renderP2s(doc) {
    const box = $("p2s-clients");
    if (!doc.p2sClients.length) {
      const configured = doc.gateway && doc.gateway.pointToSite;
      box.replaceChildren(el("p", { class: "empty" }, [configured
        ? "No point-to-site clients are connected."
        : "No point-to-site clients: point-to-site is not configured on this gateway."]));
      return;
    }
    box.replaceChildren(table(
      [["User"], ["Protocol"], ["Client IP"], ["Public address"], ["Since"], ["In / out", "num"]],
      doc.p2sClients.map((c) => [[c.userName], [c.protocol], [c.vpnClientIpAddress, "mono"],
        [c.publicIpAddress, "mono"], [c.connectedSince],
        [bytes(c.ingressBytesTransferred) + " / " + bytes(c.egressBytesTransferred), "num"]])));
  }

  function setLive(ok, text) {
    const dot = $("live-dot");
    dot.className = "dot " + (ok ? "on" : "off");
    setText("live-text", text);
  }

  function render(doc) {
    const t = Date.parse(doc.generatedAt) || Date.now();
    sample(doc.connections, t);
    const name = doc.gateway ? doc.gateway.name : "No gateway";
    setText("gw-title", name);
    document.title = doc.gateway ? doc.gateway.name + " \u00b7 vgw" : "vgw";
    renderKpis(doc.connections);
    renderGateway(doc.gateway);
    renderDaemon(doc.daemon);
    renderCounts("failures", doc.negotiationFailures, "reason", "No negotiation failures.");
    renderCounts("drops", doc.dataplaneDrops, "cause", "No data-plane drops.");
    renderConnections(doc.connections);
    renderCharts(doc.connections);
    renderBgp(doc);
    renderP2s(doc);
    setLive(true, "Live \u00b7 updated " + new Date(t).toLocaleTimeString());
  }

  async function poll() {
    try {
      const res = await fetch("/status.json", { cache: "no-store", credentials: "same-origin" });
      if (!res.ok) throw new Error("HTTP " + res.status);
      render(await res.json());
    } catch (e) {
      setLive(false, "Disconnected \u00b7 " + (e && e.message ? e.message : "fetch failed"));
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", poll);
  } else {
    poll();
  }
})();
