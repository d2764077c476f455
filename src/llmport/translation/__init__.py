"""Wire-format translation between the gateway's OpenAI form and other API dialects.

Written once and shared by both sides of the gateway: an inbound dialect
(``api/anthropic``) and an outbound provider (``providers/anthropic``) use the
same modules, one per direction:

* ``messages_to_openai``: Messages requests → OpenAI chat requests (inbound);
  Messages responses → OpenAI results (outbound); its ``_stream`` companion
  turns Messages stream events into OpenAI chunks.
* ``openai_to_messages``: OpenAI chat requests → Messages requests (outbound);
  OpenAI results → Messages responses (inbound); its ``_stream`` companion
  turns OpenAI chunks into Messages stream events.

The functions are pure (dicts in, dicts out) and raise ``InvalidRequestError``
for what one side can say and the other cannot.
"""
