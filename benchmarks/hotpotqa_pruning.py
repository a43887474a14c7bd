"""HotpotQA context pruning benchmark (DESIGN.md section 5); same as `at2-rag bench hotpotqa`."""

from at2_rag.pruning_benchmark import main

if __name__ == "__main__":
    main()
