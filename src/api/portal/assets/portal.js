// The customer portal. Every value shown comes from the API and is put in
// the page as text (textContent), never as markup. The link's token is the
// last segment of the page's address; API calls are made relative to it,
// so the portal works under any path prefix a proxy adds.
'use strict';

(() => {
  const token = location.pathname.split('/').pop() || '';
  const apiBase = token + '/api/';
  // Pages of deliveries read to find the most recent ones (the API lists
  // oldest first); beyond that the filters narrow the list.
  const MAX_DELIVERY_PAGES = 20;
  const SHOWN_DELIVERIES = 50;

  const $ = (id) => document.getElementById(id);
  let endpoints = [];
  let editing = null;
  let linkDead = false;

  class ApiFailure extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    if (linkDead) throw new ApiFailure('This link has expired.', 401);
    const init = {
      method,
      headers: {},
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(apiBase + path, init);
    } catch (e) {
      throw new ApiFailure('The server could not be reached. Try again.', 0);
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (e) {
      data = null;
    }
    if (resp.status === 401) {
      linkExpired();
      throw new ApiFailure('This link has expired or is not valid.', 401);
    }
    if (!resp.ok) {
      const message = data && data.error && data.error.message
        ? data.error.message
        : 'The request failed (HTTP ' + resp.status + ').';
      throw new ApiFailure(message, resp.status);
    }
    return data;
  }

  // An element with `props` set as properties (className, type, …) and
  // `children`: nodes, or strings that become text.
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (name === 'dataset') {
        Object.assign(node.dataset, value);
      } else {
        node[name] = value;
      }
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  function button(label, onClick, className) {
    const b = el('button', { type: 'button', className: className || '' }, label);
    b.addEventListener('click', async () => {
      b.disabled = true;
      try {
        await onClick(b);
      } catch (e) {
        if (e instanceof ApiFailure) showNotice(e.message, true);
        else throw e;
      } finally {
        if (b.isConnected) b.disabled = linkDead;
      }
    });
    return b;
  }

  function when(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function showNotice(message, isError) {
    const n = $('notice');
    n.textContent = message;
    n.className = isError ? 'notice error' : 'notice';
    n.hidden = false;
  }

  function linkExpired() {
    if (linkDead) return;
    linkDead = true;
    showNotice('This link has expired or is not valid. Ask for a new one to continue.', true);
    for (const b of document.querySelectorAll('button, input, select')) b.disabled = true;
  }

  function count(n, noun) {
    return n + ' ' + noun + (n === 1 ? '' : 's');
  }

  function clear(node) {
    while (node.firstChild) node.firstChild.remove();
  }

  // --- Endpoints -------------------------------------------------------

  function health(stats, endpoint) {
    const box = el('div', { className: 'health' });
    if (!endpoint.enabled) {
      box.classList.add('bad');
      box.append(el('strong', {}, 'Disabled'),
        endpoint.disabled_reason ? ' – ' + endpoint.disabled_reason : '');
      return box;
    }
    if (!stats) {
      box.append('Health unknown');
      return box;
    }
    const hour = stats.last_hour;
    const counts = stats.deliveries;
    // A refused connection or a timeout is as much a failure as a 500.
    const failedHour = hour.failed + hour.network_errors;
    let verdict = 'Healthy';
    if (failedHour > 0 && hour.succeeded === 0) {
      verdict = 'Failing';
      box.classList.add('bad');
    } else if (failedHour > 0 || counts.failed > 0) {
      verdict = 'Some failures';
      box.classList.add('warn');
    } else if (hour.attempts === 0) {
      verdict = 'No recent traffic';
    } else {
      box.classList.add('good');
    }
    box.append(el('strong', {}, verdict));
    const p50 = hour.latency_ms && hour.latency_ms.p50 !== null ? ', p50 ' + hour.latency_ms.p50 + ' ms' : '';
    box.append(el('span', { className: 'figures' },
      'Last hour: ' + count(hour.attempts, 'attempt') + ', ' + hour.succeeded + ' succeeded, ' +
      failedHour + ' failed' +
      (hour.network_errors ? ' (' + hour.network_errors + ' without an answer)' : '') + p50 + '.'),
    el('span', { className: 'figures' },
      'Deliveries: ' + counts.pending + ' pending, ' + counts.succeeded + ' succeeded, ' +
      counts.failed + ' failed.'));
    return box;
  }

  function secretBox(endpoint, card) {
    const box = el('div', { className: 'secret', hidden: true });
    const value = el('code', { className: 'secret-value' });
    box.append(el('span', { className: 'muted' }, 'Signing secret: '), value);
    let shown = false;
    const reveal = button('Show secret', async (b) => {
      if (shown) {
        shown = false;
        value.textContent = '';
        box.hidden = true;
        b.textContent = 'Show secret';
        return;
      }
      const data = await api('GET', 'endpoints/' + encodeURIComponent(endpoint.id) + '/secret');
      value.textContent = data.secret;
      box.hidden = false;
      shown = true;
      b.textContent = 'Hide secret';
    });
    reveal.classList.add('reveal-secret');
    let armed = false;
    const rotate = button('Rotate secret', async (b) => {
      if (!armed) {
        armed = true;
        b.textContent = 'Confirm: rotate now';
        b.classList.add('danger');
        return;
      }
      armed = false;
      b.textContent = 'Rotate secret';
      b.classList.remove('danger');
      const updated = await api('POST', 'endpoints/' + encodeURIComponent(endpoint.id) + '/rotate-secret', {});
      value.textContent = updated.secret;
      box.hidden = false;
      shown = true;
      reveal.textContent = 'Hide secret';
      card.querySelector('.result').textContent =
        'New secret issued. The old one keeps signing for 24 hours.';
    }, 'rotate');
    return { box, reveal, rotate, value, show(secret) {
      value.textContent = secret;
      box.hidden = false;
      shown = true;
      reveal.textContent = 'Hide secret';
    } };
  }

  function testResult(result) {
    const box = el('div', { className: 'test-result' });
    const ok = result.status_code >= 200 && result.status_code < 300;
    box.classList.add(ok ? 'good' : 'bad');
    const status = result.status_code ? 'HTTP ' + result.status_code : 'No answer';
    box.append(el('strong', {}, 'Test: ' + status), ' in ' + result.latency_ms + ' ms');
    if (result.error) box.append(el('div', {}, (result.error_kind ? result.error_kind + ': ' : '') + result.error));
    if (result.response) box.append(el('pre', { className: 'excerpt' }, result.response));
    return box;
  }

  function endpointCard(endpoint, stats, newSecret) {
    const card = el('li', { className: 'card endpoint', dataset: { id: endpoint.id } });
    const types = endpoint.event_types && endpoint.event_types.length
      ? endpoint.event_types.join(', ')
      : 'every event type';
    card.append(
      el('div', { className: 'endpoint-head' },
        el('span', { className: endpoint.enabled ? 'badge good' : 'badge bad' },
          endpoint.enabled ? 'Enabled' : 'Disabled'),
        el('h3', { className: 'url' }, endpoint.url)),
      endpoint.description ? el('p', { className: 'description' }, endpoint.description) : null,
      el('p', { className: 'types muted' }, 'Receives: ' + types),
      health(stats, endpoint));
    const secret = secretBox(endpoint, card);
    const result = el('div', { className: 'result', role: 'status' });
    const actions = el('div', { className: 'actions' },
      button('Send test', async () => {
        result.textContent = 'Sending…';
        const outcome = await api('POST', 'endpoints/' + encodeURIComponent(endpoint.id) + '/test');
        clear(result);
        result.append(testResult(outcome));
        refreshStats(endpoint.id);
      }, 'send-test'),
      button('Edit', async () => openForm(endpoint), 'edit'),
      secret.reveal,
      secret.rotate,
      button(endpoint.enabled ? 'Disable' : 'Enable', async () => {
        const action = endpoint.enabled ? 'disable' : 'enable';
        await api('POST', 'endpoints/' + encodeURIComponent(endpoint.id) + '/' + action);
        await loadEndpoints();
      }, 'toggle'),
      button('Deliveries', async () => {
        $('filter-endpoint').value = endpoint.id;
        await loadDeliveries();
        $('deliveries-section').scrollIntoView({ behavior: 'smooth' });
      }, 'show-deliveries'));
    card.append(actions, secret.box, result);
    if (newSecret) {
      secret.show(newSecret);
      result.textContent = 'Endpoint created. Keep its signing secret to verify deliveries.';
    }
    return card;
  }

  async function fetchStats(id) {
    try {
      return await api('GET', 'endpoints/' + encodeURIComponent(id) + '/stats');
    } catch (e) {
      return null;
    }
  }

  async function refreshStats(id) {
    const endpoint = endpoints.find((e) => e.id === id);
    const card = document.querySelector('li.endpoint[data-id="' + CSS.escape(id) + '"]');
    if (!endpoint || !card) return;
    const stats = await fetchStats(id);
    card.querySelector('.health').replaceWith(health(stats, endpoint));
  }

  async function loadEndpoints(created) {
    const data = await api('GET', 'endpoints');
    endpoints = data.endpoints;
    const stats = await Promise.all(endpoints.map((e) => fetchStats(e.id)));
    const list = $('endpoint-list');
    clear(list);
    endpoints.forEach((e, i) => {
      const secret = created && created.id === e.id ? created.secret : null;
      list.append(endpointCard(e, stats[i], secret));
    });
    $('no-endpoints').hidden = endpoints.length > 0;
    const filter = $('filter-endpoint');
    const chosen = filter.value;
    while (filter.options.length > 1) filter.remove(1);
    for (const e of endpoints) {
      filter.append(el('option', { value: e.id }, e.description ? e.description + ' – ' + e.url : e.url));
    }
    filter.value = endpoints.some((e) => e.id === chosen) ? chosen : '';
  }

  function openForm(endpoint) {
    editing = endpoint || null;
    const form = $('endpoint-form');
    form.reset();
    $('form-title').textContent = endpoint ? 'Edit endpoint' : 'Add endpoint';
    if (endpoint) {
      form.elements.url.value = endpoint.url;
      form.elements.description.value = endpoint.description || '';
      form.elements.event_types.value = (endpoint.event_types || []).join(', ');
    }
    $('form-error').hidden = true;
    form.hidden = false;
    form.elements.url.focus();
  }

  function closeForm() {
    $('endpoint-form').hidden = true;
    editing = null;
  }

  async function submitForm(event) {
    event.preventDefault();
    const form = $('endpoint-form');
    const body = {
      url: form.elements.url.value.trim(),
      description: form.elements.description.value.trim(),
      event_types: form.elements.event_types.value
        .split(',').map((t) => t.trim()).filter((t) => t.length > 0),
    };
    const save = $('save-endpoint');
    save.disabled = true;
    try {
      if (editing) {
        await api('PATCH', 'endpoints/' + encodeURIComponent(editing.id), body);
        closeForm();
        await loadEndpoints();
      } else {
        const created = await api('POST', 'endpoints', body);
        closeForm();
        await loadEndpoints(created);
      }
    } catch (e) {
      if (!(e instanceof ApiFailure)) throw e;
      const error = $('form-error');
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      save.disabled = linkDead;
    }
  }

  // --- Deliveries ------------------------------------------------------

  function attemptList(delivery) {
    const list = el('ol', { className: 'attempts' });
    for (const a of delivery.attempts) {
      const outcome = a.status_code ? 'HTTP ' + a.status_code : 'No answer';
      const item = el('li', { className: a.status_code >= 200 && a.status_code < 300 ? 'good' : 'bad' },
        el('div', {},
          el('strong', {}, outcome),
          ' · ' + when(a.at) + ' · ' + a.latency_ms + ' ms · ' + a.trigger));
      if (a.error) item.append(el('div', {}, (a.error_kind ? a.error_kind + ': ' : '') + a.error));
      if (a.response) item.append(el('pre', { className: 'excerpt' }, a.response));
      list.append(item);
    }
    if (!delivery.attempts.length) list.append(el('li', { className: 'muted' }, 'Not attempted yet.'));
    return list;
  }

  function deliveryRow(delivery) {
    const endpoint = endpoints.find((e) => e.id === delivery.endpoint_id);
    const row = el('li', { className: 'row delivery', dataset: { id: delivery.id } });
    const last = delivery.attempts[delivery.attempts.length - 1];
    const summary = el('div', { className: 'row-head' },
      el('span', { className: 'badge ' + ({ succeeded: 'good', failed: 'bad' }[delivery.status] || 'warn') },
        delivery.status),
      el('span', { className: 'event-type' }, delivery.event_type),
      el('span', { className: 'muted' }, when(delivery.created_at)),
      el('span', { className: 'muted target' }, endpoint ? endpoint.url : delivery.endpoint_id),
      el('span', { className: 'muted' },
        count(delivery.attempts.length, 'attempt') +
        (last ? ', last ' + (last.status_code ? 'HTTP ' + last.status_code : 'no answer') : '')));
    const details = el('div', { className: 'details', hidden: true });
    const actions = el('div', { className: 'actions' });
    actions.append(button('Attempts', async (b) => {
      if (!details.hidden) {
        details.hidden = true;
        b.textContent = 'Attempts';
        return;
      }
      const full = await api('GET', 'deliveries/' + encodeURIComponent(delivery.id));
      clear(details);
      details.append(attemptList(full));
      details.hidden = false;
      b.textContent = 'Hide attempts';
    }, 'show-attempts'));
    if (delivery.status === 'failed') {
      actions.append(button('Retry now', async () => {
        const updated = await api('POST', 'deliveries/' + encodeURIComponent(delivery.id) + '/retry');
        const fresh = deliveryRow(updated);
        row.replaceWith(fresh);
        const freshDetails = fresh.querySelector('.details');
        freshDetails.append(attemptList(updated));
        freshDetails.hidden = false;
        fresh.querySelector('.show-attempts').textContent = 'Hide attempts';
        refreshStats(updated.endpoint_id);
      }, 'retry'));
    }
    summary.append(actions);
    row.append(summary, details);
    return row;
  }

  // Only the latest load draws the list: an older one finishing later
  // (a quick change of filter) must not overwrite it.
  let deliveryLoads = 0;

  async function loadDeliveries() {
    const load = ++deliveryLoads;
    const list = $('delivery-list');
    list.setAttribute('aria-busy', 'true');
    const query = new URLSearchParams({ limit: '1000' });
    const endpoint = $('filter-endpoint').value;
    const status = $('filter-status').value;
    if (endpoint) query.set('endpoint', endpoint);
    if (status) query.set('status', status);
    try {
      let recent = [];
      for (let page = 0; page < MAX_DELIVERY_PAGES; page++) {
        const data = await api('GET', 'deliveries?' + query.toString());
        recent = recent.concat(data.deliveries).slice(-SHOWN_DELIVERIES);
        if (!data.next_cursor) break;
        query.set('after', data.next_cursor);
      }
      if (load !== deliveryLoads) return;
      recent.reverse();
      clear(list);
      for (const d of recent) list.append(deliveryRow(d));
      $('no-deliveries').hidden = recent.length > 0;
    } finally {
      if (load === deliveryLoads) list.setAttribute('aria-busy', 'false');
    }
  }

  // --- Event catalog ---------------------------------------------------

  function sampleBlock(label, sample) {
    return el('div', { className: 'sample' },
      el('div', { className: 'muted' }, label),
      el('pre', {}, JSON.stringify(sample, null, 2)));
  }

  function catalogCard(type) {
    const card = el('li', { className: 'card event-type-card' },
      el('div', { className: 'endpoint-head' },
        type.deprecated ? el('span', { className: 'badge warn' }, 'Deprecated') : null,
        el('h3', {}, String(type.name))),
      type.description ? el('p', {}, String(type.description)) : null);
    const versions = type.versions && typeof type.versions === 'object' ? type.versions : {};
    const names = Object.keys(versions).sort((a, b) => Number(a) - Number(b));
    for (const v of names) {
      const version = versions[v] || {};
      if (version.sample !== undefined) card.append(sampleBlock('Version ' + v + ' sample', version.sample));
    }
    if (!names.length && type.sample !== undefined) card.append(sampleBlock('Sample', type.sample));
    return card;
  }

  async function loadCatalog() {
    const data = await api('GET', 'event-types');
    const types = data.event_types || [];
    const list = $('catalog-list');
    clear(list);
    for (const t of types) list.append(catalogCard(t));
    $('no-event-types').hidden = types.length > 0;
  }

  // --- Start -----------------------------------------------------------

  async function start() {
    $('add-endpoint').addEventListener('click', () => openForm(null));
    $('cancel-endpoint').addEventListener('click', closeForm);
    $('endpoint-form').addEventListener('submit', submitForm);
    // Health moves with deliveries: both are read again.
    $('refresh-deliveries').addEventListener('click', () => {
      for (const e of endpoints) refreshStats(e.id);
      loadDeliveries().catch(report);
    });
    $('filter-endpoint').addEventListener('change', () => loadDeliveries().catch(report));
    $('filter-status').addEventListener('change', () => loadDeliveries().catch(report));
    const session = await api('GET', 'session');
    $('tenant').textContent = session.tenant;
    $('expires').textContent = 'Link valid until ' + when(session.expires_at);
    // The server refuses the link from then on; say so before a click fails.
    const left = Date.parse(session.expires_at) - Date.now();
    if (left > 0) setTimeout(linkExpired, left);
    await loadEndpoints();
    await Promise.all([loadDeliveries(), loadCatalog()]);
    document.body.dataset.ready = 'true';
  }

  function report(e) {
    if (e instanceof ApiFailure) showNotice(e.message, true);
    else showNotice('Something went wrong: ' + e.message, true);
  }

  document.addEventListener('DOMContentLoaded', () => start().catch(report));
})();
