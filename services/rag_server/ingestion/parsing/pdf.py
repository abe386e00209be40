"""PDF text by page (pypdf)."""

from __future__ import annotations

import io

from rag_server.ingestion.parsing.base import ParseError, Section


def parse_pdf(content: bytes) -> tuple[str | None, list[Section]]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted:
            # Owner-password-only PDFs open with an empty user password; real protection does not.
            try:
                if not reader.decrypt(""):
                    raise ParseError("The PDF is password-protected; upload an unprotected copy.")
            except (NotImplementedError, FileNotDecryptedError) as exc:
                raise ParseError("The PDF is password-protected; upload an unprotected copy.") from exc
            except DependencyError as exc:  # AES without the `cryptography` package installed
                raise ParseError(
                    "The PDF is encrypted in a way this server cannot open; upload an unprotected copy."
                ) from exc
        title = None
        try:
            meta = reader.metadata
            title = str(meta.title) if meta and meta.title else None
        except Exception:
            title = None  # broken metadata is not a reason to reject readable pages
        sections = [Section(page.extract_text() or "", page=i + 1) for i, page in enumerate(reader.pages)]
    except ParseError:
        raise
    except FileNotDecryptedError as exc:
        raise ParseError("The PDF is password-protected; upload an unprotected copy.") from exc
    except LimitReachedError as exc:  # pypdf's bounds: a stream inflating past them, an array too long
        raise ParseError(
            f"The PDF is too large or too complex to read (past a bound of the PDF reader: {exc}); split it "
            "or save it again."
        ) from exc
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as exc:
        raise ParseError(f"The PDF is damaged or not a PDF and could not be read ({exc}).") from exc
    except RecursionError as exc:
        raise ParseError("The PDF is damaged (its structure is circular) and could not be read.") from exc
    return title, sections
