/* ptsd-cds demo EHR: calls the CDS service the way an EHR does (discovery, hooks, feedback).
 * Configuration comes from the page (<script type="application/json" id="demo-config">).
 * Card detail Markdown is rendered with marked and sanitised with DOMPurify (vendor/).
 * No framework, no build step. */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("demo-config").textContent);
  var base = config.serviceBase || "";
  var services = {};          // hook -> service id (from discovery)
  var drafts = [];            // draft MedicationRequest / ServiceRequest resources
  var draftSeq = 0;
  var signConfirmed = null;   // draft ids shown with order-sign cards (a second click signs)
  var statusEl = document.getElementById("status");

  function say(text, isError) {
    statusEl.textContent = text;
    statusEl.className = "status" + (isError ? " error" : "");
  }

  function uuid4() {
    // crypto.randomUUID needs a secure context; getRandomValues does not.
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join("");
    return h.slice(0, 8) + "-" + h.slice(8, 12) + "-" + h.slice(12, 16) + "-" + h.slice(16, 20) + "-" + h.slice(20);
  }

  function headers() {
    var h = { "Accept": "application/json", "Content-Type": "application/json" };
    h[config.clientHeader[0]] = config.clientHeader[1];
    return h;
  }

  function explain(resp, body) {
    if (resp.status === 401) {
      return "The service requires authentication (a signed JWT); the demo cannot sign JWTs.";
    }
    var text = "HTTP " + resp.status;
    if (body && body.resourceType === "OperationOutcome" && body.issue) {
      text += ": " + body.issue.map(function (i) { return i.diagnostics; }).join("; ");
    }
    return text;
  }

  function call(method, path, payload) {
    var init = { method: method, headers: headers(), mode: "cors", credentials: "omit" };
    if (payload !== undefined) { init.body = JSON.stringify(payload); }
    return fetch(base + path, init).then(function (resp) {
      return resp.json().catch(function () { return null; }).then(function (body) {
        if (!resp.ok) { throw new Error(explain(resp, body)); }
        return body;
      });
    }, function () {
      throw new Error("The service at " + (base || window.location.origin) +
                      " cannot be reached (network or CORS error).");
    });
  }

  // --- hook requests -----------------------------------------------------------------------
  function draftBundle() {
    return { resourceType: "Bundle", type: "collection",
             entry: drafts.map(function (r) { return { resource: r }; }) };
  }

  function hookRequest(hook, extraContext) {
    var context = { userId: config.userId, patientId: config.patientId };
    Object.keys(extraContext || {}).forEach(function (k) { context[k] = extraContext[k]; });
    return { hook: hook, hookInstance: uuid4(), context: context, prefetch: config.prefetch };
  }

  function fire(hook, extraContext, target) {
    var id = services[hook];
    if (!id) { return Promise.reject(new Error("The service offers no " + hook + " service.")); }
    target.setAttribute("aria-busy", "true");
    return call("POST", "/cds-services/" + encodeURIComponent(id), hookRequest(hook, extraContext))
      .then(function (body) {
        target.removeAttribute("aria-busy");
        renderCards(target, body.cards || [], id, hook);
        return body.cards || [];
      }, function (err) {
        target.removeAttribute("aria-busy");
        target.textContent = "";
        var p = document.createElement("p");
        p.className = "error";
        p.textContent = err.message;
        target.appendChild(p);
        throw err;
      });
  }

  // --- feedback ----------------------------------------------------------------------------
  function sendFeedback(serviceId, item) {
    item.outcomeTimestamp = new Date().toISOString();
    return call("POST", "/cds-services/" + encodeURIComponent(serviceId) + "/feedback", { feedback: [item] });
  }

  // --- cards -------------------------------------------------------------------------------
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function markdown(text) {
    var html = window.marked.parse(text || "", { gfm: true, breaks: false });
    return window.DOMPurify.sanitize(html, { USE_PROFILES: { html: true } });
  }

  function safeUrl(url) {
    return /^https?:\/\//i.test(url || "") ? url : null;
  }

  function renderCards(target, cards, serviceId, hook) {
    target.textContent = "";
    if (!cards.length) {
      target.appendChild(el("p", { "class": "empty" }, "No cards: the service has no guidance here."));
      return;
    }
    cards.forEach(function (card) { target.appendChild(renderCard(card, serviceId, hook)); });
  }

  function renderCard(card, serviceId, hook) {
    var indicator = card.indicator || "info";
    var art = el("article", { "class": "card card-" + indicator, "data-uuid": card.uuid || "",
                              "data-topic": (card.source && card.source.topic && card.source.topic.code) || "" });
    var headId = "card-" + (card.uuid || uuid4());
    art.setAttribute("aria-labelledby", headId);
    var head = el("header", { "class": "card-head" });
    head.appendChild(el("span", { "class": "indicator indicator-" + indicator }, indicator.toUpperCase()));
    head.appendChild(el("h3", { id: headId, "class": "summary" }, card.summary));
    art.appendChild(head);

    var detail = el("details", { "class": "detail" });
    detail.appendChild(el("summary", {}, "Details and sources"));
    var body = el("div", { "class": "markdown" });
    body.innerHTML = markdown(card.detail);
    body.querySelectorAll("a[href]").forEach(function (a) { a.setAttribute("rel", "noopener noreferrer"); a.setAttribute("target", "_blank"); });
    detail.appendChild(body);
    art.appendChild(detail);

    var src = card.source || {};
    var srcLine = el("p", { "class": "source" });
    srcLine.appendChild(document.createTextNode("Source: "));
    if (safeUrl(src.url)) {
      srcLine.appendChild(el("a", { href: src.url, rel: "noopener noreferrer", target: "_blank" }, src.label || src.url));
    } else {
      srcLine.appendChild(document.createTextNode(src.label || "unknown"));
    }
    if (src.topic && src.topic.code) {
      srcLine.appendChild(document.createTextNode(" · "));
      srcLine.appendChild(el("a", { href: config.cardsPage + "/" + encodeURIComponent(src.topic.code) },
                             "About this card (" + (src.topic.display || src.topic.code) + ")"));
    }
    art.appendChild(srcLine);

    if (card.links && card.links.length) {
      var links = el("ul", { "class": "links", "aria-label": "Links" });
      card.links.forEach(function (l) {
        if (!safeUrl(l.url)) { return; }
        var li = el("li");
        li.appendChild(el("a", { href: l.url, rel: "noopener noreferrer", target: "_blank" }, l.label));
        links.appendChild(li);
      });
      art.appendChild(links);
    }

    var actions = el("div", { "class": "card-actions" });
    var outcome = el("p", { "class": "outcome", role: "status" });
    var buttons = [];
    (card.suggestions || []).forEach(function (s) {
      var b = el("button", { type: "button", "class": "suggestion" }, s.label);
      b.addEventListener("click", function () {
        applySuggestion(s);
        buttons.forEach(function (x) { x.disabled = true; });
        sendFeedback(serviceId, { card: card.uuid, outcome: "accepted", acceptedSuggestions: [{ id: s.uuid }] })
          .then(function () { outcome.textContent = "Accepted: " + s.label + " (feedback sent)"; art.classList.add("done"); },
                function (err) { outcome.textContent = "Accepted, but feedback failed: " + err.message; });
      });
      buttons.push(b);
      actions.appendChild(b);
    });

    var dismiss = el("button", { type: "button", "class": "dismiss", "aria-expanded": "false" }, "Dismiss");
    actions.appendChild(dismiss);
    buttons.push(dismiss);
    art.appendChild(actions);

    var form = el("form", { "class": "override", hidden: "" });
    var reasons = card.overrideReasons || [];
    var selectId = "reason-" + (card.uuid || uuid4());
    form.appendChild(el("label", { "for": selectId }, "Reason for dismissing"));
    var select = el("select", { id: selectId, name: "reason" });
    reasons.forEach(function (r, i) {
      var o = el("option", { value: String(i) }, r.display || r.code);
      select.appendChild(o);
    });
    if (!reasons.length) { select.appendChild(el("option", { value: "" }, "No reason")); }
    form.appendChild(select);
    form.appendChild(el("button", { type: "submit" }, "Send and dismiss"));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var item = { card: card.uuid, outcome: "overridden" };
      var r = reasons[Number(select.value)];
      if (r) { item.overrideReason = { reason: { code: r.code, system: r.system, display: r.display } }; }
      buttons.forEach(function (x) { x.disabled = true; });
      form.hidden = true;
      sendFeedback(serviceId, item).then(function () {
        outcome.textContent = "Dismissed" + (r ? ": " + (r.display || r.code) : "") + " (feedback sent)";
        art.classList.add("done", "dismissed");
      }, function (err) { outcome.textContent = "Dismissed, but feedback failed: " + err.message; });
    });
    dismiss.addEventListener("click", function () {
      form.hidden = !form.hidden;
      dismiss.setAttribute("aria-expanded", String(!form.hidden));
      if (!form.hidden) { select.focus(); }
    });
    art.appendChild(form);
    art.appendChild(outcome);
    return art;
  }

  // --- the draft order list ----------------------------------------------------------------
  function refKey(resource) { return resource.resourceType + "/" + resource.id; }

  function applySuggestion(s) {
    (s.actions || []).forEach(function (a) {
      if (a.type === "delete" && a.resourceId) {
        var before = drafts.length;
        drafts = drafts.filter(function (r) { return refKey(r) !== a.resourceId && r.id !== a.resourceId; });
        if (drafts.length < before) { say("Removed from the draft orders: " + (a.description || a.resourceId)); }
      } else if (a.type === "create" && a.resource) {
        var r = JSON.parse(JSON.stringify(a.resource));
        if (!r.id) { r.id = "draft-" + (++draftSeq); }
        drafts.push(r);
        say("Added to the draft orders: " + describe(r));
      }
    });
    signConfirmed = null;
    renderDrafts();
  }

  function describe(r) {
    var concept = r.medicationCodeableConcept || r.code || {};
    var name = concept.text || ((concept.coding || [])[0] || {}).display || r.resourceType;
    var dose = ((r.dosageInstruction || [])[0] || {}).text;
    return dose ? name + " — " + dose : name;
  }

  function renderDrafts() {
    var list = document.getElementById("draft-list");
    list.textContent = "";
    drafts.forEach(function (r) {
      var li = el("li", { "data-ref": refKey(r) });
      li.appendChild(el("span", { "class": "draft-name" }, describe(r) + " (draft)"));
      var rm = el("button", { type: "button", "class": "remove" }, "Remove");
      rm.setAttribute("aria-label", "Remove " + describe(r));
      rm.addEventListener("click", function () {
        drafts = drafts.filter(function (x) { return x !== r; });
        signConfirmed = null;
        renderDrafts();
        say("Removed " + describe(r));
      });
      li.appendChild(rm);
      list.appendChild(li);
    });
    document.getElementById("no-drafts").hidden = drafts.length > 0;
    document.getElementById("sign-orders").disabled = drafts.length === 0;
  }

  function addOrder() {
    var choice = config.orderMenu[Number(document.getElementById("order-choice").value)];
    if (!choice) { return; }
    var r = JSON.parse(JSON.stringify(choice.resource));
    r.id = "draft-" + (++draftSeq);
    r.status = "draft";
    r.subject = { reference: "Patient/" + config.patientId };
    r.authoredOn = config.today;
    drafts.push(r);
    signConfirmed = null;
    renderDrafts();
    say("Selected " + describe(r) + ": checking (order-select)…");
    fire("order-select", { draftOrders: draftBundle(), selections: [refKey(r)] },
         document.getElementById("order-cards"))
      .then(function (cards) { say("order-select: " + cards.length + " card(s) for " + describe(r)); },
            function (err) { say(err.message, true); });
  }

  function signOrders() {
    if (!drafts.length) { return; }
    var ids = drafts.map(refKey).sort().join(" ");
    if (signConfirmed === ids) { return completeSigning(); }
    say("Signing " + drafts.length + " order(s): checking (order-sign)…");
    fire("order-sign", { draftOrders: draftBundle() }, document.getElementById("order-cards"))
      .then(function (cards) {
        if (!cards.length) { return completeSigning(); }
        signConfirmed = ids;
        say("order-sign: " + cards.length + " card(s). Review them; press Sign orders again to sign as is.");
      }, function (err) { say(err.message, true); });
  }

  function completeSigning() {
    var list = document.getElementById("signed-list");
    drafts.forEach(function (r) { list.appendChild(el("li", {}, describe(r))); });
    say("Signed " + drafts.length + " order(s).");
    drafts = [];
    signConfirmed = null;
    renderDrafts();
  }

  // --- start -------------------------------------------------------------------------------
  function start() {
    var choice = document.getElementById("order-choice");
    config.orderMenu.forEach(function (o, i) { choice.appendChild(el("option", { value: String(i) }, o.label)); });
    document.getElementById("add-order").addEventListener("click", addOrder);
    document.getElementById("sign-orders").addEventListener("click", signOrders);
    renderDrafts();
    say("Contacting the CDS service…");
    call("GET", "/cds-services").then(function (doc) {
      (doc.services || []).forEach(function (s) { if (!services[s.hook]) { services[s.hook] = s.id; } });
      return fire("patient-view", {}, document.getElementById("pv-cards"));
    }).then(function (cards) {
      say("patient-view: " + cards.length + " card(s).");
    }, function (err) {
      say(err.message, true);
      document.getElementById("pv-cards").textContent = err.message;
    });
  }

  start();
}());
