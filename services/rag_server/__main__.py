from rag_server.cli import main

main()
