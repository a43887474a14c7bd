"""HotpotQA context pruning benchmark (the paper's Figure 5); same as `at2-rag lab bench hotpotqa`."""

from at2_rag.eval.pruning import main

if __name__ == "__main__":
    main()
