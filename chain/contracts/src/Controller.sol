// SPDX-License-Identifier: MIT
// Clean-room implementation for a local Livepeer-compatible devchain; written from the
// public ABI and documented semantics only.
pragma solidity ^0.8.20;

/// @title Controller
/// @notice Owner-managed registry: contracts find each other by keccak256(name). Starts paused.
contract Controller {
    struct ContractInfo {
        address contractAddress;
        bytes20 gitCommitHash;
    }

    address public owner;
    bool public paused;
    mapping(bytes32 => ContractInfo) private registry;

    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    event SetContractInfo(bytes32 id, address contractAddress, bytes20 gitCommitHash);
    event Pause();
    event Unpause();

    modifier onlyOwner() {
        require(msg.sender == owner, "caller must be owner");
        _;
    }

    constructor() {
        owner = msg.sender;
        paused = true;
        emit OwnershipTransferred(address(0), msg.sender);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        require(newOwner != address(0), "new owner is the zero address");
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    function pause() external onlyOwner {
        require(!paused, "system is paused");
        paused = true;
        emit Pause();
    }

    function unpause() external onlyOwner {
        require(paused, "system is not paused");
        paused = false;
        emit Unpause();
    }

    function setContractInfo(bytes32 _id, address _contractAddress, bytes20 _gitCommitHash)
        external
        onlyOwner
    {
        registry[_id] = ContractInfo(_contractAddress, _gitCommitHash);
        emit SetContractInfo(_id, _contractAddress, _gitCommitHash);
    }

    function getContractInfo(bytes32 _id) external view returns (address, bytes20) {
        ContractInfo storage info = registry[_id];
        return (info.contractAddress, info.gitCommitHash);
    }

    function getContract(bytes32 _id) external view returns (address) {
        return registry[_id].contractAddress;
    }
}
