"""Serve a web page to try a model on one's own images (Gradio).

`keras-med app --model saved_models/ham10000 [--port 7860] [--host 127.0.0.1] [--log answers.jsonl]` or
`keras-med app --server http://localhost:8501 --name ham10000`.
"""

from __future__ import annotations

import argparse
import logging

from keras_med.errors import UserError

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `keras-med app` flags to `parser`."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="PATH",
                        help="saved_models/<name> (its newest version) or saved_models/<name>/<version>.")
    source.add_argument("--server", metavar="URL", help="A running TF Serving's REST address, http://HOST:8501.")
    parser.add_argument("--name", help="Served model name (with --server).")
    parser.add_argument("--version", type=int, default=None, help="Served version (with --server; default: newest).")
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface).")
    parser.add_argument("--port", type=int, default=7860, help="Port to listen on.")
    parser.add_argument("--log", metavar="FILE", default=None,
                        help="Append every answer to FILE as JSON lines (the format of keras-med predict --log), "
                             "for audit and keras-med monitor.")


def run(args: argparse.Namespace) -> int:
    """Open the model, build the page and serve it until interrupted."""
    from keras_med.app.analysis import MAX_FILE_BYTES
    from keras_med.app.page import build_page
    from keras_med.app.source import newest_version_folder, open_saved_model, open_server
    from keras_med.app.trust_words import read_trust_facts
    from keras_med.export.prediction_log import PredictionLog

    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: expected a port number in 1..65535")
    source = open_server(args.server, args.name, args.version) if args.server else open_saved_model(args.model)
    logger.info("serving the page for %s on http://%s:%d", source.title, args.host, args.port)
    facts = read_trust_facts(None if args.server else newest_version_folder(args.model))
    log = PredictionLog(args.log) if args.log else None
    build_page(source, facts, log).launch(server_name=args.host, server_port=args.port, max_file_size=MAX_FILE_BYTES,
                              footer_links=["api"])
    return 0
