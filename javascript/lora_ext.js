// lora_ext: LoRA card browser, click-to-insert and toggle of <lora:NAME:W> tags.
//
// Loaded by A1111 as a classic script (shared global scope) and injected by the standalone app the same way.
// Every global name starts with "loraExt" (A1111_CONTRACT §1.6, §13). The pure string functions at the top
// (loraExtFindTags, loraExtToggleTag, loraExtToggleText, ...) hold the whole insert/toggle logic and touch no DOM,
// so the browser tests can call them directly.

// ---------------------------------------------------------------------------------------------------------------
// Pure prompt-editing functions
// ---------------------------------------------------------------------------------------------------------------

// All <lora:...> / <lyco:...> tags of a prompt: [{start, end, type, name, args}], `end` exclusive.
// Any argument form is accepted (negative, exponent, extra positional or named arguments, schedules).
function loraExtFindTags(prompt) {
    var re = /<(lora|lyco):([^:>]*)((?::[^>]*)?)>/gi;
    var found = [];
    var m;
    while ((m = re.exec(prompt)) !== null) {
        found.push({start: m.index, end: m.index + m[0].length, type: m[1].toLowerCase(), name: m[2], args: m[3]});
    }
    return found;
}

// The name inside a single tag text such as "<lora:foo:0.8>", or null when the text is not a tag.
function loraExtTagName(tag) {
    var tags = loraExtFindTags(tag || "");
    return tags.length ? tags[0].name : null;
}

// Remove `text` that was appended with `sep` at [start, end) of `prompt`, together with that separator.
function loraExtCut(prompt, start, end, sep) {
    if (sep && start >= sep.length && prompt.slice(start - sep.length, start) === sep) {
        start -= sep.length;
    } else if (sep && start === 0 && prompt.slice(end, end + sep.length) === sep) {
        end += sep.length;
    } else if (start > 0 && /\s/.test(prompt[start - 1]) && (end === prompt.length || /\s/.test(prompt[end]))) {
        start -= 1; // the user reformatted the separator: drop one blank so no double space is left behind
    }
    return prompt.slice(0, start) + prompt.slice(end);
}

// Remove every tag naming `name` (lora or lyco, any weight or arguments) plus the activation text that follows it
// (what a card click inserted) plus the separator before it. Returns {prompt, removed}.
function loraExtRemoveTag(prompt, name, activation, sep) {
    var tags = loraExtFindTags(prompt).filter(function(t) { return t.name === name; });
    var removed = tags.length > 0;
    for (var i = tags.length - 1; i >= 0; i--) {
        var start = tags[i].start;
        var end = tags[i].end;
        if (activation) {
            var rest = prompt.slice(end);
            var blank = rest.match(/^[ \t]*/)[0].length;
            if (rest.slice(blank, blank + activation.length) === activation) {
                end += blank + activation.length;
            }
        }
        prompt = loraExtCut(prompt, start, end, sep);
    }
    return {prompt: prompt, removed: removed};
}

// Append `text` to `prompt` with `sep` (nothing before it when the prompt is empty).
function loraExtAppend(prompt, text, sep) {
    if (!text) {
        return prompt;
    }
    if (prompt === "") {
        return text;
    }
    return prompt + sep + text;
}

// The parts of an activation text around its "{prompt}" placeholder (USERS S14, as in the webui's styles):
// {before, after}, or null when it has none.
function loraExtSplitActivation(activation) {
    var at = activation ? activation.indexOf("{prompt}") : -1;
    if (at < 0) {
        return null;
    }
    return {before: activation.slice(0, at), after: activation.slice(at + "{prompt}".length)};
}

// Card click on the positive prompt, returning {prompt, removed}: when the prompt holds a tag with the same name as
// `tag` (whatever its weight or arguments), remove it with its activation text and separator; otherwise append
// `tag` + " " + activation. An activation text with a "{prompt}" placeholder wraps the prompt instead
// ("masterpiece, {prompt}, ink style" + "a cat" -> "masterpiece, a cat, ink style" + separator + tag), and the
// second click unwraps it again when the text around the prompt is still there.
function loraExtToggleCard(prompt, tag, activation, sep) {
    var name = loraExtTagName(tag);
    var wrap = loraExtSplitActivation(activation);
    if (name !== null) {
        var res = loraExtRemoveTag(prompt, name, wrap ? "" : activation, sep);
        if (res.removed) {
            var rest = res.prompt;
            if (wrap && rest.length >= wrap.before.length + wrap.after.length &&
                rest.slice(0, wrap.before.length) === wrap.before &&
                rest.slice(rest.length - wrap.after.length) === wrap.after) {
                rest = rest.slice(wrap.before.length, rest.length - wrap.after.length);
            }
            return {prompt: rest, removed: true};
        }
    }
    if (wrap) {
        return {prompt: loraExtAppend(wrap.before + prompt + wrap.after, tag, sep), removed: false};
    }
    return {prompt: loraExtAppend(prompt, activation ? tag + " " + activation : tag, sep), removed: false};
}

// loraExtToggleCard's new prompt only.
function loraExtToggleTag(prompt, tag, activation, sep) {
    return loraExtToggleCard(prompt, tag, activation, sep).prompt;
}

// Negative text on our LoRA tab, written bare: `add` true appends it unless it is already there (bare or as the
// webui page's "(TEXT:W)"), false removes the last of either form with its separator (loraExtToggleNegative).
function loraExtToggleText(prompt, text, sep, add) {
    return loraExtToggleNegative(prompt, text, sep, add, false);
}

// The tag a card inserts: <lora:NAME:W>, W = the card's preferred weight, else the default multiplier.
function loraExtMakeTag(name, weight, defaultMultiplier) {
    var w = (weight === null || weight === undefined || weight === "") ? defaultMultiplier : weight;
    return "<lora:" + name + ":" + String(w) + ">";
}

// True when `text` is a number as a user may write a weight: sign, decimals, exponent ("-0.5", ".8", "1e-1").
function loraExtIsWeight(text) {
    return /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text);
}

// Start and end (exclusive) of the last "(TEXT:W)" in `prompt`, W any weight form, or null. Plain string search:
// regex metacharacters in TEXT are plain text.
function loraExtFindWeighted(prompt, text) {
    var head = "(" + text + ":";
    var at = prompt.lastIndexOf(head);
    while (at >= 0) {
        var close = prompt.indexOf(")", at + head.length);
        if (close >= 0 && loraExtIsWeight(prompt.slice(at + head.length, close))) {
            return {start: at, end: close + 1};
        }
        at = at > 0 ? prompt.lastIndexOf(head, at - 1) : -1;
    }
    return null;
}

// The webui page's negative text, written "(TEXT:1)" as the page's negative_prompt has it (CONTRACT §4.4); the
// same toggle as loraExtToggleText otherwise.
function loraExtToggleWeighted(prompt, text, sep, add) {
    return loraExtToggleNegative(prompt, text, sep, add, true);
}

// Start of the last bare `text` in `prompt` that is not the inside of a "(TEXT:W)", or -1. Plain string search.
function loraExtFindBare(prompt, text) {
    var at = prompt.lastIndexOf(text);
    while (at > 0 && prompt.charAt(at - 1) === "(") {
        at = prompt.lastIndexOf(text, at - 1);
    }
    return at;
}

// A card's negative text, as our tab writes it (bare) or as the webui's Lora page writes it ("(TEXT:1)",
// `weighted`). `add` true appends it in that form unless either form is already there; false removes the last
// "(TEXT:W)" whatever W became, else the last bare TEXT, with its separator. So a second click on either page
// takes out what a first click on the other put in.
function loraExtToggleNegative(prompt, text, sep, add, weighted) {
    if (!text) {
        return prompt;
    }
    var found = loraExtFindWeighted(prompt, text);
    var bare = found ? -1 : loraExtFindBare(prompt, text);
    if (add) {
        return found || bare >= 0 ? prompt : loraExtAppend(prompt, weighted ? "(" + text + ":1)" : text, sep);
    }
    if (found) {
        return loraExtCut(prompt, found.start, found.end, sep);
    }
    return bare >= 0 ? loraExtCut(prompt, bare, bare + text.length, sep) : prompt;
}

// A click on a card of the webui's own Extra Networks "Lora" page, on the texts of the prompt boxes:
// card = {name, weight (text or null = defaultMultiplier), activation, negative} (lora_ext/hosts/a1111/page.py).
// Returns {prompt, negative, removed}: the same insert/toggle as our tab's card (loraExtToggleCard, "{prompt}"
// placeholder included), and the negative text added with the tag and removed with it.
function loraExtPageToggle(prompt, negative, card, sep, defaultMultiplier) {
    var tag = loraExtMakeTag(card.name, card.weight, defaultMultiplier);
    var res = loraExtToggleCard(prompt, tag, card.activation || "", sep);
    var neg = loraExtToggleWeighted(negative, card.negative || "", sep, !res.removed);
    return {prompt: res.prompt, negative: neg, removed: res.removed};
}

// Filter, sort and page card records (plain objects from the server, see lora_ext/ui/cards.py).
// query: whitespace-separated terms, all must occur in card.search (already lower-case).
// state: {query, folder, arch, tag, favOnly, sort: "name"|"path"|"created"|"modified"|"added"|"published"|"size",
// desc: bool}. tag: only cards whose card.tags hold it ("" = all). A card without a value for the sort key (no
// Civitai publish date) comes last in both directions.
// Returns the matching cards in order.
function loraExtSelect(cards, state) {
    var terms = (state.query || "").toLowerCase().split(/\s+/).filter(function(t) { return t.length > 0; });
    var folder = state.folder || "";
    var tag = state.tag || "";
    var out = [];
    for (var i = 0; i < cards.length; i++) {
        var c = cards[i];
        if (state.favOnly && !c.fav) continue;
        if (state.arch && state.arch !== "all" && c.arch !== state.arch) continue;
        if (tag && !(c.tags && c.tags.indexOf(tag) >= 0)) continue;
        if (folder && !(c.folder === folder || c.folder.slice(0, folder.length + 1) === folder + "/")) continue;
        if (c.hidden && terms.join("").length < 4) continue;
        var ok = true;
        for (var j = 0; j < terms.length; j++) {
            if (c.search.indexOf(terms[j]) < 0) {
                ok = false;
                break;
            }
        }
        if (ok) out.push(c);
    }
    var key = state.sort || "path";
    var sign = state.desc ? -1 : 1;
    out.sort(function(a, b) {
        var x = a.sort[key];
        var y = b.sort[key];
        var xMissing = x === null || x === undefined;
        var yMissing = y === null || y === undefined;
        if (xMissing !== yMissing) return xMissing ? 1 : -1;
        if (x < y) return -sign;
        if (x > y) return sign;
        return a.sort.path < b.sort.path ? -1 : (a.sort.path > b.sort.path ? 1 : 0);
    });
    return out;
}

// All folders (and their parents) of the cards, sorted: ["a", "a/b", "c"].
function loraExtFolders(cards) {
    var seen = {};
    for (var i = 0; i < cards.length; i++) {
        var parts = cards[i].folder ? cards[i].folder.split("/") : [];
        for (var j = 1; j <= parts.length; j++) {
            seen[parts.slice(0, j).join("/")] = true;
        }
    }
    return Object.keys(seen).sort();
}

function loraExtEscape(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
        .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

// ---------------------------------------------------------------------------------------------------------------
// DOM glue
// ---------------------------------------------------------------------------------------------------------------

// Prompt boxes a card may write into, in order of preference when none was focused yet. Each prompt id X_prompt
// has its negative prompt at X_neg_prompt (A1111 convention, also used by the standalone app).
var loraExtPromptIds = ["lora_ext_app_prompt", "txt2img_prompt", "img2img_prompt"];
var loraExtState = {lastPromptId: null, tabs: {}, focused: {}};

function loraExtRoot() {
    if (typeof gradioApp === "function") {
        return gradioApp();
    }
    var app = document.getElementsByTagName("gradio-app");
    var el = app.length ? app[0] : document;
    return el.shadowRoot ? el.shadowRoot : el;
}

function loraExtTextarea(elemId) {
    return loraExtRoot().querySelector("#" + elemId + " textarea");
}

function loraExtNotifyInput(textarea) {
    if (typeof updateInput === "function") {
        updateInput(textarea);
        return;
    }
    var e = new Event("input", {bubbles: true});
    Object.defineProperty(e, "target", {value: textarea});
    textarea.dispatchEvent(e);
}

function loraExtActivePromptId() {
    if (loraExtState.lastPromptId && loraExtTextarea(loraExtState.lastPromptId)) {
        return loraExtState.lastPromptId;
    }
    if (typeof get_uiCurrentTab === "function") {
        var tab = get_uiCurrentTab();
        var tabName = tab ? tab.textContent.trim() : "";
        if (tabName === "img2img" && loraExtTextarea("img2img_prompt")) {
            return "img2img_prompt";
        }
    }
    for (var i = 0; i < loraExtPromptIds.length; i++) {
        if (loraExtTextarea(loraExtPromptIds[i])) {
            return loraExtPromptIds[i];
        }
    }
    return null;
}

function loraExtOption(key, fallback) {
    if (typeof opts === "object" && opts !== null && opts[key] !== undefined) {
        return opts[key];
    }
    return fallback;
}

// Insert or remove a card's tag, activation text and negative text. `card` is the record from the data block.
function loraExtApplyCard(tab, card) {
    var promptId = loraExtActivePromptId();
    if (!promptId || !card.tag_name) {
        return; // no prompt box on this page, or a shadowed file no tag name reaches
    }
    var sep = loraExtOption("extra_networks_add_text_separator", " ");
    var multiplier = loraExtOption("extra_networks_default_multiplier", tab.data.default_multiplier);
    var tag = loraExtMakeTag(card.tag_name, card.weight, multiplier);
    var box = loraExtTextarea(promptId);
    var res = loraExtToggleCard(box.value, tag, card.activation, sep);
    box.value = res.prompt;
    loraExtNotifyInput(box);
    if (card.negative) {
        var neg = loraExtTextarea(promptId.replace(/_prompt$/, "_neg_prompt"));
        if (neg) {
            neg.value = loraExtToggleText(neg.value, card.negative, sep, !res.removed);
            loraExtNotifyInput(neg);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The webui's own Extra Networks "Lora" page: each card's onclick calls loraExtPageCardClicked (page.py)
// ---------------------------------------------------------------------------------------------------------------

// The prompt tab ("txt2img", "img2img") a card of the webui's Extra Networks page belongs to: the nearest ancestor
// whose id starts with "{tabname}_" for a tabname that has a "{tabname}_prompt" box (the page's element ids are
// "{tabname}_{page}_…", CONTRACT §4.1). "txt2img" when none does.
function loraExtPageTabname(el) {
    for (var node = el; node && node.getAttribute; node = node.parentNode) {
        var id = node.getAttribute("id") || "";
        var tabname = id.slice(0, Math.max(0, id.indexOf("_")));
        if (/^[A-Za-z][\w-]*$/.test(tabname) && loraExtTextarea(tabname + "_prompt")) {
            return tabname;
        }
    }
    return "txt2img";
}

// Remember which prompt box of a tab (prompt or negative prompt) had the focus last (a focusin handler).
function loraExtRememberPromptFocus(e) {
    var t = e.target;
    if (!t || t.tagName !== "TEXTAREA" || !t.closest) return;
    var holder = t.closest("[id$='_prompt']");
    var m = holder ? /^(.+?)_(neg_)?prompt$/.exec(holder.id) : null;
    if (m) {
        loraExtState.focused[m[1]] = holder.id;
    }
}

// The prompt box a page card writes its tag into, as the webui's cardClicked chooses it: the tab's prompt; on a
// page that allows the negative prompt, a card without negative text writes into the box of that tab that had the
// focus last.
function loraExtPagePromptId(tabname, allowNegative, hasNegative) {
    var focused = loraExtState.focused[tabname];
    if (allowNegative && !hasNegative && focused && loraExtTextarea(focused)) {
        return focused;
    }
    return tabname + "_prompt";
}

// Set a textarea's text and tell Gradio (the webui's updateInput), only when the text changed.
function loraExtSetText(box, text) {
    if (box && box.value !== text) {
        box.value = text;
        loraExtNotifyInput(box);
    }
}

// The onclick of a card on the webui's Extra Networks "Lora" page. el: the card element (`this`); card: {name,
// weight, activation, negative, allowNegative}. Inserts <lora:NAME:W> + activation text with the configured
// separator (opts.extra_networks_add_text_separator) and "(negative text:1)" into the negative prompt; a second
// click removes the tag whatever its weight or arguments became, its activation text and the negative text.
function loraExtPageCardClicked(el, card) {
    var tabname = loraExtPageTabname(el);
    var box = loraExtTextarea(loraExtPagePromptId(tabname, !!card.allowNegative, !!card.negative));
    if (!box || !card.name) {
        return;
    }
    var neg = card.negative ? loraExtTextarea(tabname + "_neg_prompt") : null;
    var res = loraExtPageToggle(box.value, neg ? neg.value : "", card,
        loraExtOption("extra_networks_add_text_separator", " "),
        loraExtOption("extra_networks_default_multiplier", 1));
    loraExtSetText(box, res.prompt);
    if (neg) {
        loraExtSetText(neg, res.negative);
    }
}

// Send a value to Python through a hidden textbox + hidden button pair (A1111 pattern).
function loraExtSend(prefix, what, value) {
    var box = loraExtTextarea(prefix + "_" + what + "_name");
    var button = loraExtRoot().querySelector("#" + prefix + "_" + what + "_button");
    if (!box || !button) {
        return;
    }
    box.value = value;
    loraExtNotifyInput(box);
    button.click();
}

function loraExtSaveUiState(tab) {
    try {
        localStorage.setItem("loraExt.sort." + tab.prefix, JSON.stringify(
            {sort: tab.state.sort, desc: tab.state.desc, descriptions: tab.state.descriptions}));
    } catch (e) {
        // storage may be disabled; sorting still works for this page view
    }
}

function loraExtLoadUiState(prefix) {
    try {
        var saved = JSON.parse(localStorage.getItem("loraExt.sort." + prefix) || "null");
        if (saved && typeof saved.sort === "string") {
            if (["text", "html"].indexOf(saved.descriptions) < 0) saved.descriptions = "off";
            return saved;
        }
    } catch (e) {
        // ignore unreadable state
    }
    return {sort: "path", desc: false, descriptions: "off"};
}

// The tag filter's options from the data (tab.data.tags: [[tag, number of cards, "user" | "training"]], the
// user's own tags first, computed once per data build). When there are user tags, each kind gets its optgroup.
// A chosen tag the new data no longer lists is dropped.
function loraExtRenderTagFilter(tab) {
    var select = tab.root.querySelector(".lora-ext-tagfilter");
    var tags = tab.data.tags || [];
    if (!tags.some(function(t) { return t[0] === tab.state.tag; })) tab.state.tag = "";
    if (!select) return;
    var grouped = tags.some(function(t) { return t[2] === "user"; });
    var labels = {user: "Your tags", training: "Training tags"};
    var html = ['<option value="">All tags</option>'];
    var group = null;
    for (var i = 0; i < tags.length; i++) {
        var kind = tags[i][2] === "user" ? "user" : "training";
        if (grouped && kind !== group) {
            html.push((group ? "</optgroup>" : "") + '<optgroup label="' + labels[kind] + '">');
            group = kind;
        }
        html.push('<option value="' + loraExtEscape(tags[i][0]) + '">' + loraExtEscape(tags[i][0]) +
            " (" + tags[i][1] + ")</option>");
    }
    if (group) html.push("</optgroup>");
    select.innerHTML = html.join("");
    select.value = tab.state.tag;
}

// A card description written as HTML, sanitised (USERS C5): parsed in an inert <template> (no script runs, no
// image loads, no handler fires there), then rebuilt from new nodes: only formatting tags, no attributes but a
// link's http(s)/mailto href and titles; scripts, styles, frames, objects, forms, SVG/MathML and comments go with
// their content, other tags (font, img, table, ...) leave their text. Returns a DocumentFragment.
function loraExtSafeHtml(text) {
    var keep = ["a", "b", "strong", "i", "em", "u", "s", "del", "ins", "mark", "small", "sub", "sup", "code",
        "pre", "q", "cite", "span", "div", "p", "br", "hr", "blockquote", "ul", "ol", "li",
        "h1", "h2", "h3", "h4", "h5", "h6"];
    var drop = ["script", "style", "iframe", "frame", "frameset", "object", "embed", "applet", "template",
        "noscript", "noembed", "noframes", "textarea", "select", "option", "button", "form", "input", "title",
        "xmp", "plaintext", "head", "meta", "link", "base"];
    var template = document.createElement("template");
    template.innerHTML = String(text);
    var out = document.createDocumentFragment();
    var copy = function(from, to) {
        for (var node = from.firstChild; node; node = node.nextSibling) {
            if (node.nodeType === 3) {
                to.appendChild(document.createTextNode(node.data));
                continue;
            }
            if (node.nodeType !== 1 || node.namespaceURI !== "http://www.w3.org/1999/xhtml") continue;
            var name = node.localName;
            if (drop.indexOf(name) >= 0) continue;
            if (keep.indexOf(name) < 0) {
                copy(node, to);
                continue;
            }
            var el = document.createElement(name);
            var title = node.getAttribute("title");
            if (title) el.setAttribute("title", title);
            if (name === "a") {
                var href = (node.getAttribute("href") || "").replace(/[\u0000-\u0020\u007f-\u009f]/g, "");
                if (/^(https?:|mailto:)/i.test(href)) {
                    el.setAttribute("href", href);
                    el.setAttribute("target", "_blank");
                    el.setAttribute("rel", "noopener noreferrer nofollow");
                }
            }
            copy(node, el);
            to.appendChild(el);
        }
    };
    copy(template.content, out);
    return out;
}

// Put the descriptions of the rendered cards into them (mode "text": as text; "html": sanitised HTML). `cards` are
// the records of the card elements of `grid`, in order. The CSS clamps a description to three lines, so cards keep
// their size (USERS C20); the whole text is the tooltip.
function loraExtShowDescriptions(grid, cards, mode) {
    var els = grid.querySelectorAll(":scope > .lora-ext-card");
    for (var i = 0; i < els.length && i < cards.length; i++) {
        var text = cards[i].desc;
        var box = els[i].querySelector(".lora-ext-text");
        if (!text || !box) continue;
        var div = document.createElement("div");
        div.className = "lora-ext-desc " + (mode === "html" ? "lora-ext-desc-html" : "lora-ext-desc-text");
        if (mode === "html") {
            div.appendChild(loraExtSafeHtml(text));
        } else {
            div.textContent = text;
        }
        div.title = div.textContent;
        box.insertBefore(div, box.querySelector(".lora-ext-activation, .lora-ext-problem, .lora-ext-usertags"));
    }
}

function loraExtRenderFolders(tab) {
    var pane = tab.root.querySelector(".lora-ext-folders");
    if (!pane) return;
    var folders = loraExtFolders(tab.data.cards);
    var html = ['<button class="lora-ext-folder' + (tab.state.folder === "" ? " lora-ext-selected" : "") +
        '" data-folder="">All</button>'];
    for (var i = 0; i < folders.length; i++) {
        var f = folders[i];
        var depth = f.split("/").length - 1;
        var label = f.split("/").pop();
        html.push('<button class="lora-ext-folder' + (tab.state.folder === f ? " lora-ext-selected" : "") +
            '" style="padding-left:' + (0.5 + depth) + 'em" data-folder="' + loraExtEscape(f) + '">' +
            loraExtEscape(label) + '</button>');
    }
    pane.innerHTML = html.join("");
}

function loraExtRender(tab) {
    if (!tab.data) return;
    var grid = tab.root.querySelector(".lora-ext-grid");
    var info = tab.root.querySelector(".lora-ext-pageinfo");
    if (!grid) return;
    tab.visible = loraExtSelect(tab.data.cards, tab.state);
    var size = tab.data.page_size || 60;
    var pages = Math.max(1, Math.ceil(tab.visible.length / size));
    tab.state.page = Math.min(Math.max(0, tab.state.page), pages - 1);
    var slice = tab.visible.slice(tab.state.page * size, (tab.state.page + 1) * size);
    var html = [];
    for (var i = 0; i < slice.length; i++) {
        html.push(slice[i].html);
    }
    var empty = tab.data.cards.length ?
        "No LoRA matches. Clear the search or the filters, or press Refresh." :
        "No LoRA files in the LoRA folders yet. Put .safetensors files there and press Refresh.";
    grid.innerHTML = slice.length ? html.join("") : '<div class="lora-ext-empty">' + empty + "</div>";
    if (slice.length && (tab.state.descriptions === "text" || tab.state.descriptions === "html")) {
        loraExtShowDescriptions(grid, slice, tab.state.descriptions);
    }
    if (info) {
        info.textContent = tab.visible.length + " of " + tab.data.cards.length + " LoRAs, page " +
            (tab.state.page + 1) + "/" + pages;
    }
}

function loraExtReadData(tab) {
    var el = loraExtRoot().querySelector("#" + tab.prefix + "_data .lora-ext-data");
    if (!el) return false;
    var version = el.getAttribute("data-version");
    if (version === tab.version) return false;
    tab.version = version;
    tab.data = JSON.parse(el.textContent);
    tab.byName = {};
    for (var i = 0; i < tab.data.cards.length; i++) {
        tab.byName[tab.data.cards[i].name] = tab.data.cards[i];
    }
    loraExtRenderTagFilter(tab);
    return true;
}

function loraExtSetupTab(root) {
    var prefix = root.getAttribute("data-prefix");
    if (loraExtState.tabs[prefix] && loraExtState.tabs[prefix].root === root) {
        return loraExtState.tabs[prefix];
    }
    var saved = loraExtLoadUiState(prefix);
    var tab = {prefix: prefix, root: root, data: null, version: null, visible: [],
        state: {query: "", folder: "", arch: "all", tag: "", favOnly: false, sort: saved.sort, desc: !!saved.desc,
            descriptions: saved.descriptions || "off", page: 0}};
    loraExtState.tabs[prefix] = tab;
    var sortSel = root.querySelector(".lora-ext-sort");
    if (sortSel) sortSel.value = tab.state.sort;
    var descSel = root.querySelector(".lora-ext-descmode");
    if (descSel) descSel.value = tab.state.descriptions;
    var orderBtn = root.querySelector(".lora-ext-order");
    if (orderBtn) orderBtn.textContent = tab.state.desc ? "↓" : "↑";

    root.addEventListener("input", function(e) {
        var t = e.target;
        if (t.classList.contains("lora-ext-search")) {
            tab.state.query = t.value;
            tab.state.page = 0;
            loraExtRender(tab);
        }
    });
    root.addEventListener("change", function(e) {
        var t = e.target;
        if (t.classList.contains("lora-ext-sort")) {
            tab.state.sort = t.value;
            loraExtSaveUiState(tab);
        } else if (t.classList.contains("lora-ext-arch")) {
            tab.state.arch = t.value;
        } else if (t.classList.contains("lora-ext-tagfilter")) {
            tab.state.tag = t.value;
        } else if (t.classList.contains("lora-ext-descmode")) {
            tab.state.descriptions = t.value;
            loraExtSaveUiState(tab);
            loraExtRender(tab); // same cards, same page
            return;
        } else if (t.classList.contains("lora-ext-favonly")) {
            tab.state.favOnly = t.checked;
        } else {
            return;
        }
        tab.state.page = 0;
        loraExtRender(tab);
    });
    root.addEventListener("click", function(e) {
        var t = e.target;
        if (t.closest(".lora-ext-desc a[href]")) return; // a link in a description opens; the card inserts nothing
        var button = t.closest("button, .lora-ext-card");
        if (!button || !root.contains(button)) return;
        // New data may have arrived since the last scan (it runs 50 ms after DOM changes): use it for this click.
        if (loraExtReadData(tab)) {
            loraExtRenderFolders(tab);
            loraExtRender(tab);
        }
        var cardEl = t.closest(".lora-ext-card");
        var card = cardEl ? tab.byName[cardEl.getAttribute("data-name")] : null;
        if (button.classList.contains("lora-ext-order")) {
            tab.state.desc = !tab.state.desc;
            button.textContent = tab.state.desc ? "↓" : "↑";
            loraExtSaveUiState(tab);
            loraExtRender(tab);
        } else if (button.classList.contains("lora-ext-prev")) {
            tab.state.page -= 1;
            loraExtRender(tab);
        } else if (button.classList.contains("lora-ext-next")) {
            tab.state.page += 1;
            loraExtRender(tab);
        } else if (button.classList.contains("lora-ext-folder")) {
            tab.state.folder = button.getAttribute("data-folder");
            tab.state.page = 0;
            loraExtRenderFolders(tab);
            loraExtRender(tab);
        } else if (button.classList.contains("lora-ext-fav") && card) {
            e.stopPropagation();
            card.fav = !card.fav;
            button.classList.toggle("lora-ext-on", card.fav);
            loraExtSend(prefix, "fav", card.name);
        } else if (button.classList.contains("lora-ext-info") && card) {
            e.stopPropagation();
            loraExtSend(prefix, "select", card.name);
            loraExtShowInspector(prefix);
        } else if (button.classList.contains("lora-ext-card") && card) {
            loraExtApplyCard(tab, card);
        }
    });
    loraExtWatchModel(tab);
    return tab;
}

// Ask Python to re-render the cards when the loaded model's architecture is not the one they were rendered for
// (USERS C19). Sent when the browser becomes visible (tab switch) and when the pointer enters it; Python answers
// with no change when the architecture is the same, so each check costs one tiny request.
function loraExtWatchModel(tab) {
    var check = function() {
        if (tab.data) loraExtSend(tab.prefix, "sync", tab.data.model_arch || "");
    };
    tab.root.addEventListener("pointerenter", check);
    if (typeof IntersectionObserver === "function") {
        new IntersectionObserver(function(seen) {
            if (seen.some(function(s) { return s.isIntersecting; })) check();
        }).observe(tab.root);
    }
}

// Open the inspector (an accordion) and bring it into view after a card's i button was pressed.
function loraExtShowInspector(prefix) {
    var panel = loraExtRoot().querySelector("#" + prefix + "_inspector");
    if (!panel) return;
    var label = panel.querySelector(".label-wrap");
    if (label && !label.classList.contains("open")) label.click();
    panel.scrollIntoView({behavior: "smooth", block: "start"});
}

// Click on a dataset tag in the inspector: add it to the activation-text box (comma separated).
function loraExtAddActivationTag(prefix, tagText) {
    var box = loraExtTextarea(prefix + "_insp_activation");
    if (!box) return;
    var parts = box.value.split(",").map(function(s) { return s.trim(); }).filter(function(s) { return s; });
    if (parts.indexOf(tagText) < 0) {
        parts.push(tagText);
    }
    box.value = parts.join(", ");
    loraExtNotifyInput(box);
}

// Find tab roots and (re)read data blocks; cheap enough to run on every DOM mutation batch.
function loraExtScan() {
    var roots = loraExtRoot().querySelectorAll(".lora-ext-browser[data-prefix]");
    for (var i = 0; i < roots.length; i++) {
        var tab = loraExtSetupTab(roots[i]);
        if (loraExtReadData(tab)) {
            loraExtRenderFolders(tab);
            loraExtRender(tab);
        }
    }
}

function loraExtInit() {
    if (loraExtState.started) return;
    loraExtState.started = true;
    var root = loraExtRoot();
    root.addEventListener("focusin", loraExtRememberPromptFocus);
    root.addEventListener("focusin", function(e) {
        var t = e.target;
        if (t.tagName !== "TEXTAREA") return;
        for (var i = 0; i < loraExtPromptIds.length; i++) {
            if (t.closest("#" + loraExtPromptIds[i])) {
                loraExtState.lastPromptId = loraExtPromptIds[i];
            }
        }
    });
    root.addEventListener("click", function(e) {
        var tag = e.target.closest ? e.target.closest(".lora-ext-dstag") : null;
        if (tag) {
            loraExtAddActivationTag(tag.getAttribute("data-prefix"), tag.getAttribute("data-tag"));
        }
    });
    var pending = false;
    new MutationObserver(function() {
        if (pending) return;
        pending = true;
        setTimeout(function() {
            pending = false;
            loraExtScan();
        }, 50);
    }).observe(root, {childList: true, subtree: true});
    loraExtScan();
}

if (typeof onUiLoaded === "function") {
    onUiLoaded(loraExtInit);
} else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", loraExtInit);
} else {
    loraExtInit();
}
