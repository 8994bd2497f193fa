"""The playground page: Gradio layout wired to `client.rerank` and `rendering`.

A token given to the process (`KUBERANK_UI_TOKEN`) stays in this process: the page's token
field starts empty, and an empty field means "use the process's token".
"""

from __future__ import annotations

import os
from collections.abc import Callable

# Read by Gradio at import (telemetry, version check): there is no network here, and a
# playground has nothing to report.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr

from kuberank_contract import DEFAULT_INSTRUCTION
from kuberank_server.ui.client import PlaygroundError, build_request, rerank
from kuberank_server.ui.examples import EXAMPLE_DOCUMENTS, EXAMPLE_QUERY
from kuberank_server.ui.rendering import RESULT_CSS, render_error, render_ranking

QWEN3_INSTRUCTION_HINT = f"Qwen3-Reranker only, e.g. {DEFAULT_INSTRUCTION}"


RankHandler = Callable[[str, str, str, str, float | None, str], str]


def make_rank_handler(server_token: str | None) -> RankHandler:
    """The click handler: form values in, result HTML out; the token never goes out."""

    def rank(
        url: str,
        page_token: str,
        query: str,
        documents_text: str,
        top_n: float | None,
        instruction: str,
    ) -> str:
        try:
            # Gradio's number field cannot be left empty: 0 stands for "every document".
            request = build_request(url, query, documents_text, top_n or None, instruction)
            outcome = rerank(request, page_token.strip() or server_token)
        except PlaygroundError as error:
            return render_error(error)
        return render_ranking(outcome)

    return rank


def build_playground(endpoint_url: str, server_token: str | None) -> gr.Blocks:
    token_placeholder = (
        "empty: use this UI's KUBERANK_UI_TOKEN"
        if server_token
        else "paste a bearer token (JWT with the rerank scope)"
    )
    with gr.Blocks(title="kuberank playground", analytics_enabled=False) as playground:
        gr.Markdown(
            "## kuberank playground\n"
            "Paste a query and candidate documents (one per line) to see how the reranker "
            "orders them."
        )
        with gr.Row():
            url = gr.Textbox(label="Endpoint URL", value=endpoint_url, scale=2)
            token = gr.Textbox(
                label="Token", type="password", placeholder=token_placeholder, scale=2
            )
        query = gr.Textbox(label="Query", placeholder=EXAMPLE_QUERY)
        documents = gr.Textbox(
            label="Documents (one per line)", lines=6, placeholder="\n".join(EXAMPLE_DOCUMENTS)
        )
        with gr.Row():
            top_n = gr.Number(label="top_n (0: all)", value=0, precision=0, minimum=0, scale=1)
            instruction = gr.Textbox(
                label="Instruction", placeholder=QWEN3_INSTRUCTION_HINT, scale=3
            )
        submit = gr.Button("Rerank", variant="primary")
        result = gr.HTML(css_template=RESULT_CSS, elem_id="ranking-result")
        gr.Examples(
            examples=[[EXAMPLE_QUERY, "\n".join(EXAMPLE_DOCUMENTS)]],
            inputs=[query, documents],
            label="Example",
        )
        inputs = [url, token, query, documents, top_n, instruction]
        gr.on(
            triggers=[submit.click, query.submit],
            fn=make_rank_handler(server_token),
            inputs=inputs,
            outputs=result,
            api_name="rerank",
        )
    return playground


def serve_playground(endpoint_url: str, server_token: str | None, host: str, port: int) -> None:
    """Serve the page until interrupted."""
    build_playground(endpoint_url, server_token).launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        # Gradio's run history would keep every call's inputs, the token field included, in
        # the browser's storage.
        run_history=False,
    )
