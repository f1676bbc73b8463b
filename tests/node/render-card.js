#!/usr/bin/env node
// Renders an Adaptive Card with Microsoft's own renderer (npm `adaptivecards`) in a jsdom DOM and
// prints {"html": ..., "errors": [...]} as JSON. Markdown is ON, as in Teams: a TextBlock's text goes
// through markdown-it, so a link in it becomes <a>; a TextRun's text never does. The tests use this to
// prove untrusted text in our cards stays text.
//
// Usage: node render-card.js [card.json]   (stdin when no file is given)
"use strict";
const fs = require("fs");
const { JSDOM } = require("jsdom");

const dom = new JSDOM("<!DOCTYPE html><html><body></body></html>");
// The renderer uses browser globals (document, HTMLElement, HTMLButtonElement, ...): give it
// jsdom's, leaving node's own globals alone.
global.window = dom.window;
global.document = dom.window.document;
for (const name of Object.getOwnPropertyNames(dom.window)) {
  if (!(name in global)) {
    const descriptor = Object.getOwnPropertyDescriptor(dom.window, name);
    // Skip the other getters (localStorage throws on an opaque origin): the renderer needs none.
    if (descriptor && "value" in descriptor) {
      global[name] = descriptor.value;
    }
  }
}

// jsdom does not implement `innerText`, which the renderer sets a TextRun's text with. A browser's
// setter replaces the children with text nodes (and <br> for line breaks), never parsing markup;
// textContent does the same bar the <br>s, so it stands in for it.
Object.defineProperty(dom.window.HTMLElement.prototype, "innerText", {
  get() {
    return this.textContent;
  },
  set(text) {
    this.textContent = text;
  },
});

const AdaptiveCards = require("adaptivecards/dist/adaptivecards.js");
const markdownIt = require("markdown-it")({ linkify: true });

// Teams processes markdown in TextBlocks; the renderer only does when given a processor.
AdaptiveCards.AdaptiveCard.onProcessMarkdown = (text, result) => {
  result.outputHtml = markdownIt.render(text);
  result.didProcess = true;
};

const input = fs.readFileSync(process.argv[2] || 0, "utf8");
let card = JSON.parse(input);
// A Workflows envelope carries the card in its first attachment.
if (card.type === "message" && Array.isArray(card.attachments)) {
  card = card.attachments[0].content;
}

const adaptiveCard = new AdaptiveCards.AdaptiveCard();
const context = new AdaptiveCards.SerializationContext();
adaptiveCard.parse(card, context);
const errors = [];
for (let i = 0; i < context.eventCount; i++) {
  const event = context.getEventAt(i);
  errors.push({ phase: "parse", event: event.event, message: event.message });
}
const validation = adaptiveCard.validateProperties();
for (const event of validation.validationEvents) {
  errors.push({ phase: "validate", event: event.event, message: event.message });
}
const element = adaptiveCard.render();
if (!element) {
  errors.push({ phase: "render", event: "nothing rendered", message: "render() returned undefined" });
}
process.stdout.write(JSON.stringify({ html: element ? element.outerHTML : "", errors }) + "\n");
